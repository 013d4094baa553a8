// What the page shows of jobs: the followed job (state, progress, the latest preview decoded from
// the latents, or for a training job its loss curve, validation grids and checkpoints), the list
// of jobs, and the gallery of finished images with their parameters.

import { h } from "preact";
import { useEffect, useState } from "preact/hooks";
import htm from "htm";
import { api, withToken } from "./api.js";

const html = htm.bind(h);

const OVER = new Set(["done", "failed", "cancelled"]);

export function isOver(job) {
  return OVER.has(job.state);
}

function ProgressBar({ job }) {
  const p = job.progress;
  const frac = job.state === "done" ? 1 : p && p.total > 0 ? p.step / p.total : 0;
  const label = p ? `${p.unit === "train-step" ? "training step" : "step"} ${p.step} / ${p.total}` : job.state === "queued" ? "waiting for a worker" : "";
  return html`<div class="progress" data-testid="progress" data-step=${p?.step ?? 0} data-total=${p?.total ?? 0}>
    <div class="bar"><div class="fill" style=${`width:${(frac * 100).toFixed(1)}%`}></div></div>
    <span class="label">${label}</span>
  </div>`;
}

/** Points → an SVG path in a width×height box (x: step, y: loss, both linear, padded). */
export function lossPath(points, width, height, pad = 4) {
  if (points.length === 0) return { d: "", min: 0, max: 0, first: 0, last: 0 };
  const steps = points.map((p) => p.step);
  const losses = points.map((p) => p.loss).filter(Number.isFinite);
  const first = Math.min(...steps);
  const last = Math.max(...steps);
  const min = Math.min(...losses);
  const max = Math.max(...losses);
  const sx = (s) => pad + (last === first ? 0.5 : (s - first) / (last - first)) * (width - 2 * pad);
  const sy = (l) => pad + (max === min ? 0.5 : (max - l) / (max - min)) * (height - 2 * pad);
  const d = points
    .filter((p) => Number.isFinite(p.loss))
    .map((p, i) => `${i === 0 ? "M" : "L"}${sx(p.step).toFixed(1)},${sy(p.loss).toFixed(1)}`)
    .join(" ");
  return { d, min, max, first, last };
}

export function LossChart({ losses }) {
  const W = 420;
  const H = 160;
  // the plot sits right of the loss labels and above the step labels
  const L = 48;
  const B = 16;
  const points = [...losses].sort((a, b) => a.step - b.step);
  const { d, min, max, first, last } = lossPath(points, W - L - 6, H - B - 6, 0);
  const latest = points[points.length - 1];
  return html`<figure class="loss" data-testid="loss-chart">
    <svg viewBox=${`0 0 ${W} ${H}`} width=${W} height=${H} role="img" aria-label="training loss">
      <rect x=${L} y="6" width=${W - L - 6} height=${H - B - 6} class="plot" />
      <path d=${d} class="line" transform=${`translate(${L},6)`} />
      ${points.length > 0 &&
      html`<g class="ticks">
        <text x=${L - 4} y="12" text-anchor="end">${max.toPrecision(3)}</text>
        <text x=${L - 4} y=${H - B} text-anchor="end">${min.toPrecision(3)}</text>
        <text x=${L} y=${H - 3}>step ${first}</text>
        <text x=${W - 6} y=${H - 3} text-anchor="end">${last}</text>
      </g>`}
    </svg>
    <figcaption>
      ${points.length === 0 ? "no loss yet" : html`loss ${latest.loss.toPrecision(4)} at step ${latest.step}`}
    </figcaption>
  </figure>`;
}

function fileName(url) {
  return decodeURIComponent(url.split("?")[0].split("/").pop() ?? url);
}

/** A checkpoint: a folder (its files listed, each a download) or one file. */
function Checkpoint({ url }) {
  const isFile = /\.[A-Za-z0-9]+$/.test(fileName(url));
  const [files, setFiles] = useState(undefined);
  useEffect(() => {
    if (isFile) return;
    api.listing(url).then(
      (list) => setFiles(Array.isArray(list) ? list : []),
      (e) => setFiles(e.problems ?? []),
    );
  }, [url]);
  if (isFile) return html`<li><a href=${withToken(url)} download>${fileName(url)}</a></li>`;
  return html`<li>
    <span class="folder">${fileName(url)}/</span>
    ${files === undefined
      ? " …"
      : html`<span class="files">
          ${files.map((f) => (typeof f === "string" ? html`<a href=${withToken(f)} download>${fileName(f)}</a>` : html`<span class="bad">${f.message}</span>`))}
        </span>`}
  </li>`;
}

function Training({ job }) {
  return html`<div class="training">
    <${LossChart} losses=${job.losses ?? []} />
    ${(job.grids ?? []).length > 0 &&
    html`<div class="grids" data-testid="grids">
      <h4>Validation</h4>
      ${[...job.grids].reverse().map((url) => html`<figure key=${url}><img src=${withToken(url)} alt="validation grid" onLoad=${scaleUp(400)} /><figcaption>${fileName(url)}</figcaption></figure>`)}
    </div>`}
    ${(job.checkpoints ?? []).length > 0 &&
    html`<div class="checkpoints" data-testid="checkpoints">
      <h4>Checkpoints</h4>
      <ul>
        ${job.checkpoints.map((url) => html`<${Checkpoint} url=${url} key=${url} />`)}
      </ul>
    </div>`}
  </div>`;
}

/** The job being followed. */
export function JobPanel({ job, onCancel }) {
  if (!job) return html`<section class="job empty"><p>Submit a job to see its progress here.</p></section>`;
  const preview = (job.previews ?? [])[(job.previews ?? []).length - 1];
  const latest = job.results?.[job.results.length - 1];
  return html`<section class="job" data-testid="job" data-kind=${job.kind} data-state=${job.state}>
    <header>
      <span class=${`state ${job.state}`} data-testid="job-state">${job.state}</span>
      <span class="name">${job.pipeline}</span>
      <span class="id" title=${job.id}>${job.id.slice(0, 8)}</span>
      ${job.sweep && html`<span class="sweep-tag">sweep ${job.sweep.index + 1} / ${job.sweep.count}</span>`}
      ${!isOver(job) && html`<button type="button" class="cancel" onClick=${() => onCancel(job.id)}>Cancel</button>`}
    </header>
    <${ProgressBar} job=${job} />
    ${job.error &&
    html`<div class="error" data-testid="job-error">
      <div>${job.error.message}</div>
      ${job.error.hint && html`<div class="hint">hint: ${job.error.hint}</div>`}
    </div>`}
    ${job.kind === "train"
      ? html`<${Training} job=${job} />`
      : html`<div class="preview">
          ${latest
            ? html`<figure><img src=${withToken(latest.url)} alt="result" class="pixel" /><figcaption>result</figcaption></figure>`
            : preview
              ? html`<figure data-testid="preview"><img src=${withToken(preview.url)} alt="preview" class="pixel" /><figcaption>step ${preview.step}, decoded from the latents</figcaption></figure>`
              : html`<div class="placeholder">${job.state === "running" ? "denoising…" : ""}</div>`}
        </div>`}
  </section>`;
}

export function JobList({ jobs, currentId, onSelect }) {
  if (jobs.length === 0) return null;
  return html`<section class="jobs">
    <h3>Jobs</h3>
    <ul>
      ${jobs.map(
        (j) => html`<li class=${j.id === currentId ? "current" : ""}>
          <button type="button" onClick=${() => onSelect(j.id)}>
            <span class=${`state ${j.state}`}>${j.state}</span>
            <span class="name">${j.pipeline}</span>
            <span class="step">${j.progress && !isOver(j) ? `${j.progress.step}/${j.progress.total}` : ""}</span>
            <span class="id" title=${j.id}>${j.id.slice(0, 8)}</span>
          </button>
        </li>`,
      )}
    </ul>
  </section>`;
}

const isImage = (r) => /\.png$/i.test(r.file);

/** Pixel art at a whole multiple of its size (a 32×32 image, a contact sheet of them), at most `max` wide. */
function scaleUp(max) {
  return (e) => {
    const img = e.currentTarget;
    const k = Math.max(1, Math.min(4, Math.floor(max / img.naturalWidth)));
    img.style.width = `${img.naturalWidth * k}px`;
  };
}

/** Every result of every job, newest first: images with their parameters, reuse and download; other files (a trained LoRA) as downloads. */
export function Gallery({ jobs, onReuse }) {
  const items = [];
  for (const j of jobs) for (const r of [...(j.results ?? [])].reverse()) items.push({ job: j, result: r });
  return html`<section class="gallery">
    <h3>Gallery</h3>
    ${items.length === 0 && html`<p class="empty">Finished images appear here.</p>`}
    <div class="cards">
      ${items.map(({ job, result }) =>
        isImage(result)
          ? html`<figure class="card" data-testid="result" key=${result.url}>
              <a href=${withToken(result.url)} target="_blank" rel="noopener"><img src=${withToken(result.url)} alt=${result.file} class="pixel" /></a>
              <figcaption>
                <pre class="parameters" data-testid="parameters">${result.parameters}</pre>
                <div class="actions">
                  ${result.parameters && html`<button type="button" onClick=${() => onReuse(job, result)}>Reuse these settings</button>`}
                  <a class="button" href=${withToken(result.url)} download=${fileName(result.file)}>Download</a>
                </div>
              </figcaption>
            </figure>`
          : html`<figure class="card file" data-testid="result-file" key=${result.url}>
              <div class="filename">${result.file}</div>
              <figcaption>
                <div class="from">${job.kind === "train" ? "trained by" : "from"} ${job.pipeline}</div>
                <div class="actions"><a class="button" href=${withToken(result.url)} download=${fileName(result.file)}>Download</a></div>
              </figcaption>
            </figure>`,
      )}
    </div>
  </section>`;
}
