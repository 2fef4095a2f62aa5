"""runs/<plan>/ -> REPORT.md + plots/*.png + report.html, and the same tables printed with rich."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from archlab.errors import ArchlabError
from archlab.files import atomic_write, inside, slug
from archlab.plan import PlanConfig, RunSpec, RunStore, find_baseline
from archlab.report.collect import RunRow, collect
from archlab.report.eval_views import eval_sections
from archlab.report.html import SIGNIFICANCE_RULE, SIZE_NOTE, write_html
from archlab.report.plots import headline_bars, loss_curves
from archlab.report.tables import section_table, to_markdown
from archlab.report.terminal import fit_table


def sections_of(rows: list[RunRow]) -> dict[str, list[RunRow]]:
    out: dict[str, list[RunRow]] = {}
    for row in rows:
        for section in row.spec.sections:
            out.setdefault(section, []).append(row)
    return out


def write_report(plan: PlanConfig, specs: list[RunSpec], store: RunStore, profile: str | None = None,
                 console: Console | None = None) -> Path:
    rows = collect(plan, specs, store)
    try:
        base_spec, baseline_note = find_baseline(plan, specs), ""
    except ArchlabError as exc:
        base_spec, baseline_note = None, f"Note: {exc}; deltas are left out.\n"
    baseline = next((r for r in rows if r.spec is base_spec), None)
    plots = store.file("plots")
    lines = [f"# {plan.name}", ""]
    if plan.description:
        lines += [plan.description.strip(), ""]
    done = sum(r.status == "done" for r in rows)
    lines += [
        f"Profile: `{profile or 'default'}` · runs: {len(rows)} ({done} done) · baseline: "
        f"`{baseline.spec.title if baseline else '—'}` · headline: `{plan.headline}` "
        f"({'lower' if plan.lower_is_better else 'higher'} is better). Intervals are 95% (Wilson for accuracies).",
        "",
        f"Δ: ▲ better / ▼ worse than the baseline. {SIGNIFICANCE_RULE.replace('coloured (green better, red worse)', 'marked')} "
        f"{SIZE_NOTE} Interactive version: report.html.",
        "",
    ]
    if baseline_note:
        lines += [baseline_note]
    sections = sections_of(rows)
    for title, section_rows in sections.items():
        table = section_table(plan, section_rows, baseline)
        name = slug(title.lower(), fallback="runs")
        curve = loss_curves(section_rows, inside(plots, f"loss_{name}.png"), f"{plan.name}: {title}")
        bars = headline_bars(section_rows, plan.headline, inside(plots, f"{name}_headline.png"),
                             f"{title}: {plan.headline}")
        lines += [f"## {title}", "", to_markdown(table), ""]
        for image in (curve, bars):
            if image is not None:
                lines += [f"![{image.stem}](plots/{image.name})", ""]
        if console is not None:
            console.print(fit_table(title, table[0], table[1:], console.width))
    views = eval_sections(rows, plots)
    for view in views:
        lines += [f"## {view.title}", "", view.markdown, ""]
        lines += [f"![{image.stem}](plots/{image.name})\n" for image in view.images]
    lines += ["## Runs", "", "| Run id | Sections | Status |", "|---|---|---|"]
    lines += [f"| `{r.spec.id}` | {', '.join(r.spec.sections)} | {r.status}"
              + (f": {r.error or r.message}" if r.status in ("failed", "diverged")
                 else f" — {_cell(r.message)}" if r.message else "")  # e.g. which corrupt checkpoint it skipped
              + " |" for r in rows]
    report = store.file("REPORT.md")
    atomic_write(report, "\n".join(lines) + "\n")
    write_html(store.file("report.html"), plan, rows, baseline, sections, views, profile)
    return report


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
