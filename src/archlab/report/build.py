"""runs/<plan>/ -> REPORT.md + plots/*.png + report.html, and the same tables printed with rich."""

from __future__ import annotations

import html
from pathlib import Path

from rich.console import Console
from rich.table import Table

from archlab.errors import ArchlabError
from archlab.files import atomic_write, inside, slug
from archlab.plan import PlanConfig, RunSpec, RunStore, find_baseline
from archlab.report.collect import RunRow, collect
from archlab.report.eval_views import eval_views
from archlab.report.plots import headline_bars, loss_curves
from archlab.report.tables import section_table, to_markdown


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
    ]
    if baseline_note:
        lines += [baseline_note]
    html_parts = [f"<h1>{html.escape(plan.name)}</h1><p>{html.escape(plan.description)}</p>"]
    for title, section_rows in sections_of(rows).items():
        table = section_table(plan, section_rows, baseline)
        name = slug(title.lower(), fallback="runs")
        curve = loss_curves(section_rows, inside(plots, f"loss_{name}.png"), f"{plan.name}: {title}")
        bars = headline_bars(section_rows, plan.headline, inside(plots, f"{name}_headline.png"),
                             f"{title}: {plan.headline}")
        lines += [f"## {title}", "", to_markdown(table), ""]
        for image in (curve, bars):
            if image is not None:
                lines += [f"![{image.stem}](plots/{image.name})", ""]
        html_parts.append(_html_section(title, table, [p for p in (curve, bars) if p is not None]))
        if console is not None:
            console.print(_rich_table(title, table))
    for title, markdown, images in eval_views(rows, plots):
        lines += [f"## {title}", "", markdown, ""]
        lines += [f"![{image.stem}](plots/{image.name})\n" for image in images]
        html_parts.append(f"<h2>{html.escape(title)}</h2><pre>{html.escape(markdown)}</pre>"
                          + "".join(f"<img src='plots/{p.name}' style='max-width:48%'>" for p in images))
    lines += ["## Runs", "", "| Run id | Sections | Status |", "|---|---|---|"]
    lines += [f"| `{r.spec.id}` | {', '.join(r.spec.sections)} | {r.status}{' — ' + _cell(r.message) if r.message else ''} |"
              for r in rows]  # the message says why a run failed, or which corrupt checkpoint it skipped
    report = store.file("REPORT.md")
    atomic_write(report, "\n".join(lines) + "\n")
    atomic_write(store.file("report.html"), "<html><body style='font-family:sans-serif'>" + "".join(html_parts)
                 + "</body></html>\n")
    return report


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rich_table(title: str, table: list[list[str]]) -> Table:
    header, *body = table
    out = Table(title=title, show_lines=False)
    for col in header:
        out.add_column(col, overflow="fold")
    for row in body:
        out.add_row(*row)
    return out


def _html_section(title: str, table: list[list[str]], images: list[Path]) -> str:
    header, *body = table
    cells = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    imgs = "".join(f"<img src='plots/{p.name}' style='max-width:48%'>" for p in images)
    return f"<h2>{html.escape(title)}</h2><table border=1 cellpadding=4>{cells}{rows}</table>{imgs}"
