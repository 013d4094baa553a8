// The YAML editor: a textarea over a backdrop that repeats its text with the located problems
// marked (the line tinted, the range from col to endCol underlined), a line-number gutter with a
// marker on each line that has a problem, and the problems listed below as the CLI prints them,
// each a button that puts the cursor there. The text is checked by POST /api/validate, 300 ms
// after the last keystroke; an answer to older text than the newest is dropped.
//
// A textarea, not CodeMirror: the editor's job here is showing sdc's own located errors, which a
// backdrop does in ~150 lines with the same preact the page uses, where CodeMirror 6 would add ~10
// packages (~400 KB) to serve and an import map entry for each.

import { h } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import htm from "htm";
import { api } from "./api.js";

const html = htm.bind(h);

/** Problems that point into the edited text (a line, and no other file named than the edited one). */
export function locatedIn(problems, file) {
  return problems.filter((p) => p.line !== undefined && (p.file === undefined || file === undefined || sameFile(p.file, file)));
}

function sameFile(a, b) {
  const norm = (s) => s.replace(/\\/g, "/").replace(/^\.\//, "");
  return norm(a) === norm(b) || norm(a).endsWith(`/${norm(b)}`) || norm(b).endsWith(`/${norm(a)}`);
}

/** One backdrop line: its text with each problem's range wrapped in a mark. */
function BackdropLine({ text, problems }) {
  if (problems.length === 0) return html`<div class="bl">${text || " "}</div>`;
  // marks sorted by column; overlapping ranges are merged into the first
  const ranges = problems
    .map((p) => {
      const start = Math.max(0, Math.min((p.col ?? 1) - 1, text.length));
      let end = p.endCol !== undefined && p.endCol > (p.col ?? 1) ? p.endCol - 1 : start;
      if (end <= start) {
        const word = /^[^\s:#,]+/.exec(text.slice(start));
        end = start + (word ? word[0].length : 1);
      }
      return { start, end: Math.min(end, Math.max(text.length, start + 1)), message: p.message };
    })
    .sort((a, b) => a.start - b.start);
  const parts = [];
  let at = 0;
  for (const r of ranges) {
    if (r.start < at) continue;
    parts.push(text.slice(at, r.start));
    parts.push(html`<mark class="squiggle" title=${r.message}>${text.slice(r.start, r.end) || " "}</mark>`);
    at = r.end;
  }
  parts.push(text.slice(at));
  return html`<div class="bl bad">${parts}</div>`;
}

/**
 * `text`, `onChange(text)`: the YAML; `name`: the pipeline it edits (relative paths resolve from its
 * folder); `file`: that pipeline's file, to tell its problems from a base file's; `onValidated(result)`
 * gets each answer (`{ ok, problems }`), or `{ ok: false, problems, failed: true }` when the check failed.
 */
export function YamlEditor({ text, onChange, name, file, onValidated }) {
  const [result, setResult] = useState(undefined);
  const [checking, setChecking] = useState(false);
  const area = useRef(null);
  const backdrop = useRef(null);
  const gutter = useRef(null);
  const seq = useRef(0);

  useEffect(() => {
    const mine = ++seq.current;
    setChecking(true);
    const timer = setTimeout(async () => {
      let r;
      try {
        r = await api.validate(text, name);
      } catch (e) {
        r = { ok: false, failed: true, problems: e.problems ?? [{ message: String(e.message ?? e) }] };
      }
      if (mine !== seq.current) return; // a newer text is being checked
      setResult(r);
      setChecking(false);
      onValidated?.(r);
    }, 300);
    return () => clearTimeout(timer);
  }, [text, name]);

  const syncScroll = () => {
    const a = area.current;
    if (!a) return;
    if (backdrop.current) {
      backdrop.current.scrollTop = a.scrollTop;
      backdrop.current.scrollLeft = a.scrollLeft;
    }
    if (gutter.current) gutter.current.scrollTop = a.scrollTop;
  };

  // Tab indents by two spaces (YAML has no tabs) instead of leaving the editor; Escape then Tab leaves it
  const indentOnTab = (e) => {
    if (e.key !== "Tab" || e.shiftKey || e.altKey || e.ctrlKey || e.metaKey || area.current?.dataset.escaped) {
      if (area.current) delete area.current.dataset.escaped;
      if (e.key === "Escape" && area.current) area.current.dataset.escaped = "1";
      return;
    }
    e.preventDefault();
    const a = e.currentTarget;
    const { selectionStart: start, selectionEnd: end } = a;
    onChange(text.slice(0, start) + "  " + text.slice(end));
    requestAnimationFrame(() => a.setSelectionRange(start + 2, start + 2));
  };

  const jump = (p) => {
    const a = area.current;
    if (!a || p.line === undefined) return;
    const lines = text.split("\n");
    let offset = 0;
    for (let i = 0; i < p.line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
    offset += Math.max(0, (p.col ?? 1) - 1);
    a.focus();
    a.setSelectionRange(offset, offset);
    const lineHeight = parseFloat(getComputedStyle(a).lineHeight) || 18;
    a.scrollTop = Math.max(0, (p.line - 4) * lineHeight);
    syncScroll();
  };

  const lines = text.split("\n");
  const problems = result?.problems ?? [];
  const here = locatedIn(problems, file);
  const byLine = new Map();
  for (const p of here) byLine.set(p.line, [...(byLine.get(p.line) ?? []), p]);

  let status;
  if (checking) status = html`<span class="status checking">checking…</span>`;
  else if (!result) status = html`<span class="status"> </span>`;
  else if (result.ok) status = html`<span class="status ok" data-testid="yaml-ok">✓ valid</span>`;
  else if (result.failed) status = html`<span class="status bad">could not check</span>`;
  else status = html`<span class="status bad">${problems.length} problem${problems.length === 1 ? "" : "s"}</span>`;

  return html`
    <div class="yaml">
      <div class="editor">
        <div class="gutter" ref=${gutter} aria-hidden="true">
          ${lines.map((_, i) => {
            const ps = byLine.get(i + 1);
            return html`<div class=${ps ? "ln bad" : "ln"} title=${ps ? ps.map((p) => p.message).join("\n") : undefined}>${i + 1}</div>`;
          })}
        </div>
        <div class="code">
          <div class="backdrop" ref=${backdrop} aria-hidden="true">
            ${lines.map((line, i) => html`<${BackdropLine} text=${line} problems=${byLine.get(i + 1) ?? []} />`)}
          </div>
          <textarea
            ref=${area}
            aria-label="Pipeline YAML"
            spellcheck="false"
            wrap="off"
            autocomplete="off"
            autocapitalize="off"
            value=${text}
            onInput=${(e) => onChange(e.currentTarget.value)}
            onKeyDown=${indentOnTab}
            onScroll=${syncScroll}
          ></textarea>
        </div>
      </div>
      <div class="yaml-status">${status}<span class="aside">Generate runs this text as it is; the form's values are not applied to it.</span></div>
      ${problems.length > 0 &&
      html`<ul class="problems" data-testid="yaml-problems">
        ${problems.map(
          (p) => html`<li class="problem">
            ${p.line !== undefined
              ? html`<button type="button" class="loc" onClick=${() => jump(p)}>${p.file ? `${p.file}:` : ""}${p.line}:${p.col ?? 1}</button>`
              : p.subject
                ? html`<span class="loc">${p.subject}</span>`
                : null}
            <span class="msg">${p.message}</span>
            ${p.snippet && html`<pre class="snippet">${p.snippet}</pre>`}
            ${p.hint && html`<div class="hint">hint: ${p.hint}</div>`}
          </li>`,
        )}
      </ul>`}
    </div>
  `;
}
