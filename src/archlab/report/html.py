"""runs/<plan>/report.html: one static page (plus plots/) that works from file:// with no network.

Tables are sortable by any column (click a header), 95% intervals are drawn as ranges under the value,
the baseline row is marked, and a difference from the baseline is coloured only when the two 95%
intervals do not overlap (SIGNIFICANCE_RULE). Curves are interactive (Plotly, shipped in report/vendor/
and copied next to the page; click a legend entry to hide or show a run). Each run has a drill-down:
status and error line, resolved config as a diff against the baseline, metrics, its curve, samples,
eval details and environment. Failed, diverged and pending runs are listed like any other.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from archlab.evals.lib.views import View, fmt
from archlab.files import atomic_write, slug
from archlab.plan import PlanConfig
from archlab.report.collect import RunRow
from archlab.report.sizes import human

PLOTLY = "plotly-basic.min.js"
SIGNIFICANCE_RULE = ("A difference from the baseline is coloured (green better, red worse) only when the two 95% "
                     "intervals do not overlap; an overlapping or missing interval leaves it uncoloured. "
                     "Non-overlap is a conservative test (p < 0.05 and then some); overlap does not prove equality.")
SIZE_NOTE = ("Params: all parameters (tied weights once); non-emb: without token/position embeddings and an untied "
             "output embedding. FLOPs: the run's recorded training FLOPs, or ≈ 6·N·D (N all parameters, D training "
             "tokens seen) marked ≈ as an estimate.")
LOWER_IS_BETTER = ("loss", "perplexity", "bits_per_byte", "bpb", "latency", "ms", "memory", "forgetting", "seconds")


def lower_is_better(metric: str, plan: PlanConfig | None = None) -> bool:
    """The plan says it for its headline; other metrics by name (losses, bits, latency, memory: lower)."""
    if plan is not None and metric == plan.headline:
        return plan.lower_is_better
    key = metric.rpartition(".")[2].lower()
    return any(word in key for word in LOWER_IS_BETTER)


@dataclass
class Cell:
    text: str
    sort: float | str | None = None  # None: missing, sorted last
    ci: tuple[float, float] | None = None
    value: float | None = None
    cls: str = ""
    title: str = ""
    html: str | None = None  # pre-rendered content (links), escaped text otherwise


def significant(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    """True when both 95% intervals exist and do not overlap."""
    return a is not None and b is not None and (a[1] < b[0] or b[1] < a[0])


def delta_class(row: RunRow, baseline: RunRow | None, metric: str, lower: bool) -> tuple[str, float | None]:
    if baseline is None or row is baseline:
        return "", None
    a, b = row.metric(metric), baseline.metric(metric)
    if a is None or b is None:
        return "", None
    if not significant(row.interval(metric), baseline.interval(metric)):
        return "ns", a - b
    better = a < b if lower else a > b
    return ("better" if better else "worse"), a - b


# ----------------------------------------------------------------------------------------------- tables
def run_link(row: RunRow, baseline: RunRow | None) -> Cell:
    badge = " <span class='badge'>baseline</span>" if row is baseline else ""
    link = f"<a href='#run-{_anchor(row.spec.id)}' class='drill' data-run='{_anchor(row.spec.id)}'>" \
           f"{html.escape(row.spec.title)}</a>{badge}"
    return Cell(row.spec.title, row.spec.title, html=link)


def status_cell(row: RunRow) -> Cell:
    text = f"{row.mark} {row.status}"
    line = row.error or row.message if row.status in ("failed", "diverged", "interrupted") else ""
    return Cell(text, row.status, cls=f"status-{row.status}", title=line,
                html=html.escape(text) + (f"<div class='errline'>{html.escape(line)}</div>" if line else ""))


def size_cells(row: RunRow) -> list[Cell]:
    size = row.size
    flops, estimated = row.train_flops
    return [Cell(human(size.total) if size else "—", size.total if size else None, title=str(size.total) if size else ""),
            Cell(human(size.non_embedding) if size else "—", size.non_embedding if size else None,
                 title=str(size.non_embedding) if size else ""),
            Cell(("≈" if estimated and flops else "") + human(flops), flops,
                 title=("estimate 6·N·D" if estimated else "recorded") if flops else "")]


def metric_cell(row: RunRow, metric: str, baseline: RunRow | None, plan: PlanConfig) -> Cell:
    value, ci = row.metric(metric), row.interval(metric)
    if value is None:
        return Cell("—")
    cls, _ = delta_class(row, baseline, metric, lower_is_better(metric, plan))
    text = fmt(value) + (f" [{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]" if ci else "")
    return Cell(text, value, ci=ci, value=value, cls=cls if cls != "ns" else "")


def section_cells(plan: PlanConfig, rows: list[RunRow], baseline: RunRow | None) -> tuple[list[str], list[list[Cell]]]:
    from archlab.report.tables import column_names, varying_eval_values, what_changed

    names = column_names([*plan.metrics, plan.headline])
    evaluated_at = varying_eval_values(rows) if all(r.spec.config is not None for r in rows) else []
    header = ["Variant", "What changed", "Status", "Params", "Non-emb", "Train FLOPs",
              *[f"eval {n}" for n in evaluated_at], *[names[m] for m in plan.metrics], f"Δ {names[plan.headline]}"]
    body = []
    for row in rows:
        cls, delta = delta_class(row, baseline, plan.headline, plan.lower_is_better)
        delta_text = "—" if delta is None else f"{'+' if delta >= 0 else ''}{delta:.4g}"
        body.append([
            run_link(row, baseline), Cell(what_changed(row, baseline)), status_cell(row), *size_cells(row),
            *[Cell(fmt(row.spec.config.eval_values().get(n))) for n in evaluated_at],
            *[metric_cell(row, m, baseline, plan) for m in plan.metrics],
            Cell(delta_text, delta, cls=cls, title={"ns": "intervals overlap: not significant", "better":
                 "intervals do not overlap", "worse": "intervals do not overlap"}.get(cls, "")),
        ])
    return header, body


NUMBER_CI = re.compile(r"^\s*(-?[\d.,]+(?:e-?\d+)?)\s*\[\s*(-?[\d.,]+(?:e-?\d+)?),\s*(-?[\d.,]+(?:e-?\d+)?)\]")
NUMBER = re.compile(r"^\s*([≈~]?)(-?[\d.,]+(?:e[-+]?\d+)?)")


def text_cell(text: str) -> Cell:
    """A cell of an eval view's table: its number (and interval, 'v [lo, hi]') parsed for sorting and bars."""
    match = NUMBER_CI.match(text)
    if match:
        value, lo, hi = (float(g.replace(",", "")) for g in match.groups())
        return Cell(text, value, ci=(lo, hi), value=value)
    match = NUMBER.match(text)
    if match and match.group(2) not in (".", "-"):
        try:
            return Cell(text, float(match.group(2).replace(",", "")))
        except ValueError:
            pass
    return Cell(text, None if text.strip() in ("—", "", "None") else text)


def render_table(header: list[str], body: list[list[Cell]], table_id: str, baseline_title: str | None = None,
                 row_ids: list[str] | None = None) -> str:
    spans: dict[int, tuple[float, float]] = {}
    for j in range(len(header)):
        bounds = [b for r in body if j < len(r) and r[j].ci for b in r[j].ci]
        if bounds and max(bounds) > min(bounds):
            spans[j] = (min(bounds), max(bounds))
    head = "".join(f"<th data-col='{j}' title='click to sort'>{html.escape(h)}<span class='arrow'></span></th>"
                   for j, h in enumerate(header))
    lines = []
    for i, row in enumerate(body):
        base = baseline_title is not None and row and row[0].text == baseline_title
        attrs = " class='baseline'" if base else ""
        if row_ids:
            attrs += f" data-run='{_anchor(row_ids[i])}'"
        tds = []
        for j, c in enumerate(row):
            sort = "" if c.sort is None else html.escape(str(c.sort))
            kind = "num" if isinstance(c.sort, int | float) else "txt"
            content = c.html if c.html is not None else html.escape(c.text)
            if c.ci is not None and j in spans and c.value is not None:
                lo, hi = spans[j]
                left, right = ((c.ci[0] - lo) / (hi - lo) * 100, (c.ci[1] - lo) / (hi - lo) * 100)
                point = (c.value - lo) / (hi - lo) * 100
                content += (f"<div class='ci' title='95% interval [{c.ci[0]:.4g}, {c.ci[1]:.4g}]'>"
                            f"<span class='rng' style='left:{left:.1f}%;width:{max(right - left, 0.5):.1f}%'></span>"
                            f"<span class='pt' style='left:{point:.1f}%'></span></div>")
            title = f" title='{html.escape(c.title)}'" if c.title else ""
            tds.append(f"<td class='{c.cls}' data-sort='{sort}' data-kind='{kind}'{title}>{content}</td>")
        lines.append(f"<tr{attrs}>{''.join(tds)}</tr>")
    return (f"<table class='sortable' id='{table_id}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(lines)}</tbody></table>")


# --------------------------------------------------------------------------------------------- drill-down
def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: data}


def config_diff(row: RunRow, baseline: RunRow | None) -> list[tuple[str, Any, Any]]:
    """(key, baseline value, this run's value) for every resolved key that differs from the baseline."""
    mine = flatten(row.config)
    base = flatten(baseline.config) if baseline is not None else {}
    keys = sorted(set(mine) | set(base))
    missing = "(absent)"
    return [(k, base.get(k, missing), mine.get(k, missing)) for k in keys if base.get(k, missing) != mine.get(k, missing)]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 300 else text[:300] + " …"


def drilldown(row: RunRow, baseline: RunRow | None, images: list[Path]) -> str:
    anchor = _anchor(row.spec.id)
    parts = [f"<p><b>Run id</b> <code>{html.escape(row.spec.id)}</code> · <b>Status</b> "
             f"<span class='status-{row.status}'>{row.mark} {html.escape(row.status)}</span>"
             + (f" at step {row.step}" if row.step is not None else "")
             + (f" · tokens seen {row.tokens_seen:,}" if row.tokens_seen else "") + "</p>"]
    if row.message:
        parts.append(f"<p class='message'>{html.escape(row.message)}</p>")
    if row.error:
        parts.append(f"<p class='errline'>error: {html.escape(row.error)}</p>")
    if row.size is not None:
        flops, estimated = row.train_flops
        parts.append(f"<p>Parameters {row.size.total:,} (non-embedding {row.size.non_embedding:,}, trainable "
                     f"{row.size.trainable:,}) · training FLOPs {('≈' if estimated else '') + human(flops)}</p>")
    # config diff
    full = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td>{html.escape(_short(v))}</td></tr>"
                   for k, v in sorted(flatten(row.config).items()))
    full = f"<details><summary>full resolved config</summary><table class='diff'><tbody>{full}</tbody></table></details>"
    if baseline is None or row is baseline:
        what = "this run is the baseline: the other runs show their config as a diff against it" \
            if row is baseline else "no baseline to diff against"
        parts.append(f"<h4>Config</h4><p class='note'>{what}</p>{full}")
    else:
        diff = config_diff(row, baseline)
        rows = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td>{html.escape(_short(b))}</td>"
                       f"<td>{html.escape(_short(v))}</td></tr>" for k, b, v in diff) \
            or "<tr><td colspan=3>same resolved config as the baseline</td></tr>"
        parts.append(f"<h4>Config</h4><p class='note'>resolved config: the keys that differ from the baseline "
                     f"({html.escape(baseline.spec.title)})</p><table class='diff config-diff'><thead><tr><th>key</th>"
                     f"<th>baseline</th><th>this run</th></tr></thead><tbody>{rows}</tbody></table>{full}")
    # metrics
    metric_rows = []
    for name, payload in sorted(row.evals.items()):
        for key, value in (payload.get("metrics") or {}).items():
            if not isinstance(value, int | float):
                continue
            ci = (payload.get("ci95") or {}).get(key)
            metric_rows.append(f"<tr><td>{html.escape(name)}.{html.escape(key)}</td><td>{fmt(value)}</td>"
                               f"<td>{f'[{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]' if ci else '—'}</td>"
                               f"<td>{payload.get('n', '—')}</td></tr>")
    if metric_rows:
        parts.append("<h4>Metrics</h4><table class='metrics'><thead><tr><th>metric</th><th>value</th>"
                     "<th>95% interval</th><th>n</th></tr></thead><tbody>" + "".join(metric_rows) + "</tbody></table>")
    if row.curve or row.eval_curve:
        parts.append(f"<h4>Curves</h4><div class='plot run-plot' id='curve-{anchor}' data-run='{anchor}'></div>")
    if row.samples:
        items = "".join(
            f"<li><span class='prompt'>{html.escape(str(s.get('prompt', ''))[-400:])}</span>"
            f"<span class='completion'>{html.escape(str(s.get('completion', '')))}</span>"
            + (f"<div class='reference'>reference: {html.escape(str(s['reference'])[:400])}</div>"
               if s.get("reference") else "") + "</li>" for s in row.samples[:10])
        parts.append(f"<h4>Samples</h4><ol class='samples'>{items}</ol>")
    details = []
    for name, payload in sorted(row.evals.items()):
        info = {k: payload.get(k) for k in ("params", "details", "seconds") if payload.get(k)}
        text = json.dumps(info, indent=1, default=str)
        if len(text) > 6000:
            text = text[:6000] + "\n… (see the eval JSON in the run folder)"
        details.append(f"<details><summary>{html.escape(name)}</summary><pre>{html.escape(text)}</pre></details>")
    if details or images:
        parts.append("<h4>Eval details</h4>" + "".join(f"<img src='plots/{p.name}' class='evalimg'>" for p in images)
                     + "".join(details))
    if row.env:
        env = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in row.env.items())
        parts.append(f"<h4>Environment</h4><table class='env'><tbody>{env}</tbody></table>")
    return (f"<details class='run' id='run-{anchor}'><summary><b>{html.escape(row.spec.title)}</b> "
            f"<span class='status-{row.status}'>{row.mark} {html.escape(row.status)}</span>"
            f"{' <span class=badge>baseline</span>' if row is baseline else ''}</summary>"
            f"<div class='body'>{''.join(parts)}</div></details>")


def _anchor(run_id: str) -> str:
    return slug(run_id, 80, fallback="run")


# ------------------------------------------------------------------------------------------------- page
def plot_data(plan: PlanConfig, rows: list[RunRow], sections: dict[str, list[RunRow]]) -> dict[str, Any]:
    runs = {}
    for row in rows:
        flops, estimated = row.train_flops
        runs[_anchor(row.spec.id)] = {
            "title": row.spec.title, "status": row.status,
            "curve": [list(p) for p in row.curve], "eval_curve": [list(p) for p in row.eval_curve],
            "headline": row.metric(plan.headline), "ci": row.interval(plan.headline),
            "flops": flops, "flops_estimated": estimated,
        }
    return {"headline": plan.headline, "lower_is_better": plan.lower_is_better, "runs": runs,
            "sections": {title: [_anchor(r.spec.id) for r in section] for title, section in sections.items()}}


def write_html(path: Path, plan: PlanConfig, rows: list[RunRow], baseline: RunRow | None,
               sections: dict[str, list[RunRow]], views: list[View], profile: str | None) -> Path:
    assets = path.parent / "plots"
    assets.mkdir(parents=True, exist_ok=True)
    vendored = resources.files("archlab.report") / "vendor" / PLOTLY
    with resources.as_file(vendored) as source:
        shutil.copyfile(source, assets / PLOTLY)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    body = [f"<h1>{html.escape(plan.name)}</h1>"]
    if plan.description:
        body.append(f"<p>{html.escape(plan.description.strip())}</p>")
    body.append(
        f"<p class='meta'>Profile <code>{html.escape(profile or 'default')}</code> · {len(rows)} runs ({summary}) · "
        f"baseline <b>{html.escape(baseline.spec.title) if baseline else '—'}</b> · headline "
        f"<code>{html.escape(plan.headline)}</code> ({'lower' if plan.lower_is_better else 'higher'} is better)</p>"
        f"<p class='rule'><b>Significance:</b> {SIGNIFICANCE_RULE} Intervals are 95% (Wilson for accuracies); the bar "
        f"under a value draws its interval on the column's scale, the dot the value.</p>"
        f"<p class='note'>{SIZE_NOTE} Click a column header to sort; click a run to open its details; click a "
        f"legend entry to hide or show a run's curve.</p>")
    toc = []
    for k, (title, section_rows) in enumerate(sections.items()):
        header, cells = section_cells(plan, section_rows, baseline)
        table_id = f"section-{k}"
        toc.append((table_id, title))
        body.append(f"<section id='{table_id}-wrap'><h2>{html.escape(title)}</h2>"
                    + render_table(header, cells, table_id, baseline.spec.title if baseline else None,
                                   [r.spec.id for r in section_rows])
                    + f"<div class='plots'><div class='plot section-curves' id='curves-{k}' "
                      f"data-section='{html.escape(title)}'></div>"
                    + f"<div class='plot section-bars' id='bars-{k}' data-section='{html.escape(title)}'></div></div>"
                    + "</section>")
    body.append("<section id='flops-wrap'><h2>Headline vs training compute</h2><div class='plot' id='flops-plot'>"
                "</div></section>")
    for k, view in enumerate(views):
        table_id = f"eval-{k}"
        toc.append((table_id, view.title))
        table = ""
        if view.table:
            header, *rest = view.table
            table = render_table(header, [[text_cell(c) for c in r] for r in rest], table_id,
                                 baseline.spec.title if baseline else None)
            note = view.note
        else:
            note = view.note  # a legacy VIEWS section: its markdown
        body.append(f"<section id='{table_id}-wrap'><h2>{html.escape(view.title)}</h2>{table}"
                    + (f"<pre class='note'>{html.escape(note)}</pre>" if note else "")
                    + "".join(f"<img src='plots/{p.name}' class='evalimg'>" for p in view.images) + "</section>")
    images_of = {}
    for row in rows:
        mark = f"_{slug(row.spec.id.lower(), 60)}.png"
        images_of[row.spec.id] = [p for v in views for p in v.images if p.name.endswith(mark)]
    run_header = ["Run", "Sections", "Status", "Step", "Message"]
    run_cells = [[run_link(r, baseline), Cell(", ".join(r.spec.sections)), status_cell(r),
                  Cell(str(r.step) if r.step is not None else "—", r.step),
                  Cell(r.error or r.message)] for r in rows]
    body.append("<section id='runs-wrap'><h2>All runs</h2>"
                + render_table(run_header, run_cells, "runs", baseline.spec.title if baseline else None,
                               [r.spec.id for r in rows])
                + "<div id='drilldowns'>" + "".join(drilldown(r, baseline, images_of[r.spec.id]) for r in rows)
                + "</div></section>")
    nav = " · ".join(f"<a href='#{t}-wrap'>{html.escape(title)}</a>" for t, title in toc) + " · <a href='#runs-wrap'>All runs</a>"
    data = json.dumps(plot_data(plan, rows, sections), default=str).replace("</", "<\\/")
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(plan.name)} · archlab"
            f"</title><style>{CSS}</style><script src='plots/{PLOTLY}'></script></head><body>"
            f"<nav>{nav}</nav>{''.join(body)}"
            f"<script type='application/json' id='report-data'>{data}</script><script>{JS}</script></body></html>\n")
    atomic_write(path, page)
    return path


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1em;
color:#222}
nav{font-size:.9em;margin-bottom:1em;color:#555}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.3em .55em;vertical-align:top;text-align:left}
table.sortable th{cursor:pointer;background:#f4f6f8;user-select:none;white-space:nowrap}
table.sortable th .arrow{color:#888;margin-left:.3em}
th[aria-sort=ascending] .arrow:after{content:'▲'} th[aria-sort=descending] .arrow:after{content:'▼'}
tr.baseline td{background:#fff8dc}
.badge{background:#8a6d00;color:#fff;border-radius:3px;padding:0 .35em;font-size:.75em;margin-left:.3em}
td.better{background:#d9f2d9;color:#135e13;font-weight:600} td.worse{background:#f8d7d7;color:#8b1a1a;font-weight:600}
td.ns{color:#777}
.ci{position:relative;height:6px;background:#eef0f3;border-radius:3px;margin-top:3px;min-width:80px}
.ci .rng{position:absolute;top:0;height:6px;background:#7fa7d9;border-radius:3px}
.ci .pt{position:absolute;top:-2px;width:3px;height:10px;background:#1f3b73;margin-left:-1px}
.status-failed,.status-diverged{color:#b00020} .status-pending,.status-interrupted{color:#8a6d00}
.errline{color:#b00020;font-family:monospace;font-size:.85em;white-space:pre-wrap}
.plots{display:flex;flex-wrap:wrap;gap:1em} .plot{min-width:480px;flex:1;height:380px}
.run-plot{height:300px}
details.run{border:1px solid #ddd;border-radius:4px;margin:.4em 0;padding:.3em .6em}
details.run[open]{background:#fcfcfd;box-shadow:0 0 0 2px #7fa7d9}
details.run summary{cursor:pointer}
.note{color:#555;font-size:.9em} pre{background:#f6f8fa;padding:.6em;overflow:auto;max-height:400px}
.samples .prompt{color:#555} .samples .completion{background:#e8f0fe;font-weight:600}
.samples li{white-space:pre-wrap;margin-bottom:.5em;font-family:monospace;font-size:.85em}
img.evalimg{max-width:48%;margin:.3em}
"""

JS = r"""
(function(){
const data = JSON.parse(document.getElementById('report-data').textContent);
function sortBy(table, col, th){
  const tbody = table.tBodies[0];
  const asc = th.getAttribute('aria-sort') !== 'ascending';
  table.querySelectorAll('th').forEach(h => h.removeAttribute('aria-sort'));
  th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
  const rows = Array.from(tbody.rows);
  const key = r => { const c = r.cells[col]; if (!c) return null; const v = c.dataset.sort;
    if (v === undefined || v === '') return null; return c.dataset.kind === 'num' ? parseFloat(v) : v.toLowerCase(); };
  rows.sort((a, b) => { const x = key(a), y = key(b);
    if (x === null && y === null) return 0; if (x === null) return 1; if (y === null) return -1;  // missing last
    const o = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
    return asc ? o : -o; });
  rows.forEach(r => tbody.appendChild(r));
}
document.querySelectorAll('table.sortable').forEach(t => t.querySelectorAll('th').forEach((th, i) =>
  th.addEventListener('click', () => sortBy(t, i, th))));
const drawn = {};
function drawRun(anchor){
  const el = document.getElementById('curve-' + anchor); const run = data.runs[anchor];
  if (!el || drawn[anchor] || typeof Plotly === 'undefined') return; drawn[anchor] = true;
  const traces = [];
  if (run.curve.length) traces.push({x: run.curve.map(p => p[0]), y: run.curve.map(p => p[1]), name: 'train loss', mode: 'lines'});
  if (run.eval_curve.length) traces.push({x: run.eval_curve.map(p => p[0]), y: run.eval_curve.map(p => p[1]),
    name: 'validation loss', mode: 'lines+markers'});
  Plotly.newPlot(el, traces, {title: run.title, xaxis: {title: 'optimizer step'}, yaxis: {title: 'loss'},
    margin: {t: 40, r: 10}}, {responsive: true, displaylogo: false});
}
function openRun(anchor){
  const d = document.getElementById('run-' + anchor); if (!d) return;
  d.open = true; drawRun(anchor); d.scrollIntoView({block: 'start'});
}
document.querySelectorAll('details.run').forEach(d => d.addEventListener('toggle', () => {
  if (d.open) drawRun(d.id.slice(4)); }));
document.querySelectorAll('a.drill').forEach(a => a.addEventListener('click', e => {
  e.preventDefault(); openRun(a.dataset.run); history.replaceState(null, '', '#run-' + a.dataset.run); }));
if (location.hash.startsWith('#run-')) openRun(location.hash.slice(5));
if (typeof Plotly === 'undefined') { document.querySelectorAll('.plot').forEach(p => p.textContent =
  'plots/plotly-basic.min.js is missing: the interactive plots cannot be drawn'); return; }
const config = {responsive: true, displaylogo: false};
document.querySelectorAll('.section-curves').forEach(el => {
  const ids = data.sections[el.dataset.section] || []; const traces = [];
  ids.forEach((id, k) => { const r = data.runs[id];
    if (r.curve.length) traces.push({x: r.curve.map(p => p[0]), y: r.curve.map(p => p[1]), name: r.title,
      legendgroup: id, mode: 'lines'});
    if (r.eval_curve.length) traces.push({x: r.eval_curve.map(p => p[0]), y: r.eval_curve.map(p => p[1]),
      name: r.title + ' (validation)', legendgroup: id, mode: 'markers', marker: {size: 7}}); });
  if (!traces.length) { el.textContent = 'no curves yet'; return; }
  Plotly.newPlot(el, traces, {title: 'loss (lines: train, dots: validation); click a legend entry to toggle a run',
    xaxis: {title: 'optimizer step'}, yaxis: {title: 'loss'}, margin: {t: 40, r: 10}, legend: {font: {size: 10}}}, config);
});
document.querySelectorAll('.section-bars').forEach(el => {
  const ids = (data.sections[el.dataset.section] || []).filter(id => data.runs[id].headline !== null);
  if (!ids.length) { el.textContent = 'no ' + data.headline + ' yet'; return; }
  const runs = ids.map(id => data.runs[id]);
  const err = runs.every(r => r.ci) ? {type: 'data', symmetric: false, array: runs.map(r => r.ci[1] - r.headline),
    arrayminus: runs.map(r => r.headline - r.ci[0])} : undefined;
  Plotly.newPlot(el, [{type: 'scatter', mode: 'markers', marker: {size: 10}, x: runs.map(r => r.title),
    y: runs.map(r => r.headline), error_y: err}],
    {title: data.headline + ' with 95% intervals', yaxis: {title: data.headline}, margin: {t: 40, r: 10}}, config);
});
(function(){
  const el = document.getElementById('flops-plot');
  const runs = Object.values(data.runs).filter(r => r.headline !== null && r.flops);
  if (!runs.length) { el.textContent = 'no finished run with both ' + data.headline + ' and a FLOP count'; return; }
  const traces = runs.map(r => ({x: [r.flops], y: [r.headline], name: r.title + (r.flops_estimated ? ' (≈ FLOPs)' : ''),
    mode: 'markers', marker: {size: 11, symbol: r.flops_estimated ? 'circle-open' : 'circle'},
    error_y: r.ci ? {type: 'data', symmetric: false, array: [r.ci[1] - r.headline], arrayminus: [r.headline - r.ci[0]]}
                  : undefined}));
  Plotly.newPlot(el, traces, {title: data.headline + ' vs training FLOPs (open markers: ≈ 6·N·D estimate)',
    xaxis: {title: 'training FLOPs', type: 'log'}, yaxis: {title: data.headline}, margin: {t: 40, r: 10}}, config);
})();
})();
"""
