// The page of `sdc serve`: pick a pipeline, set it up in a form generated from the pipeline schema
// or edit its YAML with live validation, submit, follow the job's progress and previews, and browse
// the results. preact + htm (tagged templates, no build step), loaded as ES modules from the
// server's node_modules through the import map in index.html.

import { h, render } from "preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import htm from "htm";
import { api, applyEvent, followJob } from "./api.js";
import { formFields, initialValues, toOverrides, toSweep } from "./schema-form.js";
import { settingsFromResult } from "./parameters.js";
import { YamlEditor } from "./editor.js";
import { Gallery, JobList, JobPanel, isOver } from "./views.js";

const html = htm.bind(h);

function Field({ field, value, onInput, problem }) {
  const id = `f-${field.key}`;
  const common = { id, name: field.key, value, onInput: (e) => onInput(field.key, e.currentTarget.value), title: field.description };
  let input;
  if (field.input === "select") {
    input = html`<select ...${common}>
      ${field.options.map((o) => html`<option value=${o}>${o}</option>`)}
    </select>`;
  } else if (field.input === "number") {
    input = html`<input type="number" inputmode="decimal" step=${field.step} min=${field.min} max=${field.max} ...${common} />`;
  } else if (field.input === "textarea") {
    input = html`<textarea rows="2" ...${common}></textarea>`;
  } else {
    input = html`<input type="text" ...${common} />`;
  }
  return html`<div class=${`field ${field.input}${problem ? " bad" : ""}`}>
    <label for=${id}>${field.label}</label>
    ${input}
    ${problem && html`<div class="field-problem">${problem}</div>`}
  </div>`;
}

/**
 * The message for a form field among the problems: the form's own check names the field's key, the
 * server's names the override it refused (`--set scheduler.steps=0`, the CLI's flag).
 */
function fieldProblem(problems, field) {
  const p = problems.find((p) => p.subject === field.key || (p.subject ?? "").startsWith(`--set ${field.path}=`));
  if (!p) return undefined;
  return p.subject === field.key ? p.message : `${p.message}${p.hint ? ` (${p.hint})` : ""}`;
}

function ProblemList({ problems }) {
  if (!problems || problems.length === 0) return null;
  return html`<ul class="problems" data-testid="submit-problems">
    ${problems.map(
      (p) => html`<li class="problem">
        ${p.line !== undefined ? html`<span class="loc">${p.file ? `${p.file}:` : ""}${p.line}:${p.col ?? 1}</span>` : p.subject ? html`<span class="loc">${p.subject}</span>` : null}
        <span class="msg">${p.message}</span>
        ${p.hint && html`<div class="hint">hint: ${p.hint}</div>`}
      </li>`,
    )}
  </ul>`;
}

function App() {
  const [boot, setBoot] = useState({ loading: true });
  const [selected, setSelected] = useState(undefined);
  const [mode, setMode] = useState("form");
  const [values, setValues] = useState({});
  const [yamlText, setYamlText] = useState("");
  const [yamlOk, setYamlOk] = useState(true);
  const [sweepPrompts, setSweepPrompts] = useState("");
  const [sweepSeeds, setSweepSeeds] = useState("");
  const [problems, setProblems] = useState([]);
  const [submitting, setSubmitting] = useState(false);
  const [jobs, setJobs] = useState({}); // id → job
  const [order, setOrder] = useState([]); // ids, newest first
  const [currentId, setCurrentId] = useState(undefined);
  const [pendingSettings, setPendingSettings] = useState(undefined); // settings the form takes once its fields are known
  const following = useRef(new Map()); // id → stop()

  const pipelines = boot.pipelines ?? [];
  const pipeline = pipelines.find((p) => p.name === selected);
  const fields = useMemo(() => (pipeline && boot.schema ? formFields(boot.schema, pipeline) : []), [pipeline, boot.schema]);

  const upsert = (job) => {
    setJobs((js) => ({ ...js, [job.id]: { ...(js[job.id] ?? {}), ...job } }));
    setOrder((o) => (o.includes(job.id) ? o : [job.id, ...o]));
  };

  const follow = (id) => {
    if (following.current.has(id)) return;
    const stop = followJob(id, (e) => {
      setJobs((js) => (js[id] ? { ...js, [id]: applyEvent(js[id], e) } : js));
      if (e.type === "done") following.current.delete(id);
    });
    following.current.set(id, stop);
  };

  useEffect(() => {
    (async () => {
      try {
        const [pl, schema, existing] = await Promise.all([api.pipelines(), api.schema(), api.jobs()]);
        setBoot({ pipelines: pl, schema });
        const first = pl.find((p) => p.name === "txt2img") ?? pl[0];
        if (first) choose(first);
        const list = existing ?? [];
        setJobs(Object.fromEntries(list.map((j) => [j.id, j])));
        setOrder(list.map((j) => j.id));
        for (const j of list) if (!isOver(j)) follow(j.id);
        if (list[0]) setCurrentId(list[0].id);
      } catch (e) {
        setBoot({ error: e });
      }
    })();
    return () => {
      for (const stop of following.current.values()) stop();
    };
  }, []);

  function choose(p, settings) {
    setSelected(p.name);
    setYamlText(p.yaml);
    setProblems([]);
    setPendingSettings(settings ?? p.settings);
  }

  // the form's values follow the chosen pipeline once its fields are known
  useEffect(() => {
    if (pendingSettings && fields.length > 0) {
      setValues(initialValues(fields, pendingSettings));
      setPendingSettings(undefined);
    }
  }, [pendingSettings, fields]);

  const onInput = (key, v) => setValues((vs) => ({ ...vs, [key]: v }));

  async function submit(e) {
    e.preventDefault();
    if (!pipeline) return;
    const sw = toSweep(sweepPrompts, sweepSeeds);
    let request;
    if (mode === "form") {
      const o = toOverrides(fields, values);
      const local = [...o.problems, ...sw.problems];
      if (local.length > 0) {
        setProblems(local.map((p) => ({ message: p.message, subject: p.key })));
        return;
      }
      request = { pipeline: pipeline.name, overrides: o.overrides };
    } else {
      if (sw.problems.length > 0) {
        setProblems(sw.problems.map((p) => ({ message: p.message, subject: p.key })));
        return;
      }
      request = { pipeline: pipeline.name, yaml: yamlText };
    }
    if (sw.sweep) request.sweep = sw.sweep;
    setSubmitting(true);
    setProblems([]);
    try {
      const res = await api.submit(request);
      const ids = res.jobs.map((j) => j.id);
      for (const id of [...ids].reverse()) {
        upsert({ id, pipeline: pipeline.name, kind: pipeline.kind, state: "queued", settings: pipeline.settings, results: [] });
        // the job's own settings (after the overrides) and sweep place; its state comes from the events only,
        // so a reply older than the latest event cannot turn the clock back
        api.job(id).then(
          (j) => upsert({ id, settings: j.settings, createdAt: j.createdAt, ...(j.sweep ? { sweep: j.sweep } : {}) }),
          () => {},
        );
        follow(id);
      }
      setCurrentId(ids[0]);
    } catch (err) {
      setProblems(err.problems ?? [{ message: String(err.message ?? err) }]);
    } finally {
      setSubmitting(false);
    }
  }

  async function cancel(id) {
    try {
      upsert(await api.cancel(id));
    } catch (err) {
      setProblems(err.problems ?? [{ message: String(err.message ?? err) }]);
    }
  }

  function reuse(job, result) {
    const p = pipelines.find((x) => x.name === job.pipeline) ?? pipeline;
    if (!p) return;
    setMode("form");
    choose(p, settingsFromResult(result.parameters, { ...p.settings, ...job.settings }));
    window.scrollTo({ top: 0, behavior: "smooth" });
  }

  if (boot.loading) return html`<p class="loading">Loading…</p>`;
  if (boot.error)
    return html`<div class="fatal"><h2>The server did not answer as expected</h2><${ProblemList} problems=${boot.error.problems ?? [{ message: String(boot.error) }]} /></div>`;

  const jobList = order.map((id) => jobs[id]).filter(Boolean);
  const current = currentId ? jobs[currentId] : undefined;

  return html`
    <header class="top">
      <h1>sdc</h1>
      <label class="picker">
        <span>Pipeline</span>
        <select
          aria-label="Pipeline"
          value=${selected}
          onChange=${(e) => {
            const p = pipelines.find((x) => x.name === e.currentTarget.value);
            if (p) choose(p);
          }}
        >
          ${pipelines.map((p) => html`<option value=${p.name}>${p.name} (${p.kind})</option>`)}
        </select>
      </label>
      ${pipeline && html`<span class="file">${pipeline.file}</span>`}
    </header>
    ${pipelines.length === 0 && html`<p class="empty">This server has no pipelines: start it with <code>sdc serve pipelines/*.yaml</code>.</p>`}
    <main>
      <form class="setup" onSubmit=${submit} noValidate>
        <div class="tabs" role="tablist">
          <button type="button" role="tab" aria-selected=${mode === "form"} class=${mode === "form" ? "on" : ""} onClick=${() => setMode("form")}>Form</button>
          <button type="button" role="tab" aria-selected=${mode === "yaml"} class=${mode === "yaml" ? "on" : ""} onClick=${() => setMode("yaml")}>YAML</button>
        </div>
        ${mode === "form"
          ? html`<div class="fields">
              ${fields.map((f) => html`<${Field} field=${f} value=${values[f.key] ?? ""} onInput=${onInput} problem=${fieldProblem(problems, f)} />`)}
            </div>`
          : html`<${YamlEditor} text=${yamlText} onChange=${setYamlText} name=${pipeline?.name} file=${pipeline?.file} onValidated=${(r) => setYamlOk(r.ok || r.failed)} />`}
        ${pipeline?.kind !== "train" &&
        html`<details class="sweep">
          <summary>Sweep</summary>
          <p>One job per prompt × seed (an empty list keeps the ${mode === "form" ? "form's" : "YAML's"} value).</p>
          <label>Prompts, one per line<textarea name="sweep-prompts" rows="3" value=${sweepPrompts} onInput=${(e) => setSweepPrompts(e.currentTarget.value)}></textarea></label>
          <label>Seeds (1, 2, 5-8)<input type="text" name="sweep-seeds" value=${sweepSeeds} onInput=${(e) => setSweepSeeds(e.currentTarget.value)} /></label>
        </details>`}
        <div class="submit">
          <button type="submit" class="primary" disabled=${submitting || !pipeline || (mode === "yaml" && !yamlOk)}>${pipeline?.kind === "train" ? "Train" : "Generate"}</button>
          ${mode === "yaml" && !yamlOk && html`<span class="note">fix the problems to submit</span>`}
        </div>
        <${ProblemList} problems=${problems.filter((p) => mode !== "form" || !fields.some((f) => fieldProblem([p], f)))} />
      </form>
      <div class="side">
        <${JobPanel} job=${current} onCancel=${cancel} />
        <${JobList} jobs=${jobList} currentId=${currentId} onSelect=${setCurrentId} />
      </div>
    </main>
    <${Gallery} jobs=${jobList} onReuse=${reuse} />
  `;
}

render(html`<${App} />`, document.getElementById("app"));
