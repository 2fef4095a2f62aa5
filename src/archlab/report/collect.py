"""Gather what the runs of a plan wrote: status, eval metrics with intervals, loss curves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archlab.plan import PlanConfig, RunSpec, RunStore

STATUS_MARK = {"done": "✅", "running": "🔄", "pending": "⏳", "interrupted": "⏸️", "failed": "⚠️", "diverged": "⚠️"}


@dataclass
class RunRow:
    spec: RunSpec
    status: str
    message: str
    evals: dict[str, dict[str, Any]]
    curve: list[tuple[int, float]] = field(default_factory=list)
    eval_curve: list[tuple[int, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)  # load_best_model_at_end: {step, metric} of the exported model

    def metric(self, dotted: str) -> float | None:
        name, _, key = dotted.partition(".")
        value = self.evals.get(name, {}).get("metrics", {}).get(key)
        return float(value) if isinstance(value, int | float) else None

    def interval(self, dotted: str) -> tuple[float, float] | None:
        name, _, key = dotted.partition(".")
        ci = self.evals.get(name, {}).get("ci95", {}).get(key)
        return (float(ci[0]), float(ci[1])) if ci else None

    def n(self, dotted: str) -> int | None:
        return self.evals.get(dotted.partition(".")[0], {}).get("n")

    @property
    def mark(self) -> str:
        return STATUS_MARK.get(self.status, "?")


def collect(plan: PlanConfig, specs: list[RunSpec], store: RunStore) -> list[RunRow]:
    rows = []
    for spec in specs:
        run = store.run(spec.id)
        status = run.status()
        records = run.metrics.read()
        rows.append(
            RunRow(
                spec=spec,
                status=status.get("status", "pending"),
                message=status.get("message", ""),
                evals=run.eval_results(),
                curve=[(r["step"], r["loss"]) for r in records if "loss" in r],
                eval_curve=[(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r],
                best={k: status[k] for k in ("best_step", "best_metric", "step") if k in status},
            )
        )
    return rows
