"""Markdown tables in the seeds' style: variant, what changed, status, metrics, delta vs baseline."""

from __future__ import annotations

from archlab.evals.lib.views import fmt, to_markdown
from archlab.plan import PlanConfig
from archlab.report.collect import RunRow
from archlab.report.sizes import human

__all__ = ["fmt", "section_table", "to_markdown"]


def what_changed(row: RunRow, baseline: RunRow | None) -> str:
    if baseline is None or row is baseline:
        return "baseline" if row is baseline else ""
    diffs = [f"{k}={v}" for k, v in row.spec.labels.items() if baseline.spec.labels.get(k) != v]
    return ", ".join(diffs) or "same labels as baseline"


def metric_cell(row: RunRow, metric: str) -> str:
    value = row.metric(metric)
    ci = row.interval(metric)
    if value is None:
        return "—"
    return f"{fmt(value)} [{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]" if ci else fmt(value)


def delta_cell(row: RunRow, baseline: RunRow | None, metric: str, lower_is_better: bool) -> str:
    """The difference from the baseline; ▲ (better) or ▼ (worse) only when the 95% intervals do not overlap."""
    if baseline is None or row is baseline:
        return "—"
    a, b = row.metric(metric), baseline.metric(metric)
    if a is None or b is None:
        return "—"
    sign = "+" if a - b >= 0 else ""
    mark = ""
    ra, rb = row.interval(metric), baseline.interval(metric)
    if ra is not None and rb is not None and (ra[1] < rb[0] or rb[1] < ra[0]):
        better = (a < b) if lower_is_better else (a > b)
        mark = " ▲" if better else " ▼"
    return f"{sign}{a - b:.4g}{mark}"


def size_cells(row: RunRow) -> list[str]:
    """Parameters (total, non-embedding) and training FLOPs (≈: the 6·N·D estimate)."""
    flops, estimated = row.train_flops
    size = row.size
    return [human(size.total) if size else "—", human(size.non_embedding) if size else "—",
            ("≈" if estimated and flops else "") + human(flops)]


def column_names(metrics: list[str]) -> dict[str, str]:
    """'loss.bits_per_byte' -> 'bits_per_byte' where the short name is unambiguous."""
    metrics = list(dict.fromkeys(metrics))
    short = [m.partition(".")[2] or m for m in metrics]
    return {m: s if short.count(s) == 1 else m for m, s in zip(metrics, short, strict=True)}


def varying_eval_values(rows: list[RunRow]) -> list[str]:
    """Scheduled attributes (a graft's mu, ...) whose evaluation value differs between these runs."""
    values = [row.spec.config.eval_values() for row in rows]
    names = sorted(set().union(*values)) if values else []
    return [n for n in names if len({v.get(n) for v in values}) > 1]


def section_table(plan: PlanConfig, rows: list[RunRow], baseline: RunRow | None) -> list[list[str]]:
    names = column_names([*plan.metrics, plan.headline])
    evaluated_at = varying_eval_values(rows) if all(r.spec.config for r in rows) else []  # a column when it varies: numbers at different mu differ for it
    header = ["Variant", "What changed", "Status", "Params", "Non-emb", "FLOPs", *[f"eval {n}" for n in evaluated_at],
              *[names[m] for m in plan.metrics], f"Δ {names[plan.headline]}"]
    body = [
        [
            row.spec.title,
            what_changed(row, baseline),
            row.mark + (f" {row.message}" if row.status in ("failed", "diverged") and row.message else ""),
            *size_cells(row),
            *[fmt(row.spec.config.eval_values().get(n)) for n in evaluated_at],
            *[metric_cell(row, m) for m in plan.metrics],
            delta_cell(row, baseline, plan.headline, plan.lower_is_better),
        ]
        for row in rows
    ]
    return [header, *body]
