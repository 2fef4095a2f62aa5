"""Gather what the runs of a plan wrote: status, eval metrics with intervals, loss curves, config, env,
samples, size and compute. Runs are read only through RunDir."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archlab.plan import PlanConfig, RunSpec, RunStore
from archlab.report.sizes import Size, run_size

STATUS_MARK = {"done": "✅", "running": "🔄", "pending": "⏳", "interrupted": "⏸️", "failed": "⚠️", "diverged": "⚠️"}


@dataclass
class RunRow:
    spec: RunSpec
    status: str
    message: str
    evals: dict[str, dict[str, Any]]
    curve: list[tuple[int, float]] = field(default_factory=list)
    eval_curve: list[tuple[int, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # resolved config as the run recorded it
    env: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""  # last line of error.log
    record: dict[str, Any] = field(default_factory=dict)  # status.json
    tokens_seen: int | None = None
    step: int | None = None
    size: Size | None = None
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

    @property
    def train_flops(self) -> tuple[float | None, bool]:
        """(training FLOPs, estimated?): the run's own count when recorded, else ≈ 6·N·tokens."""
        for source in (self.record, self.record.get("summary") or {}):
            if isinstance(source.get("train_flops"), int | float):
                return float(source["train_flops"]), False
        per_token = self.record.get("flops_per_token")
        if isinstance(per_token, int | float) and self.tokens_seen:
            return float(per_token) * self.tokens_seen, False
        if self.size is not None and self.tokens_seen:
            return 6.0 * self.size.total * self.tokens_seen, True
        return None, True


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A recorded config with the keys added since it was written at their defaults, so two runs written by
    different versions diff only where they differ (the recorded file itself is left as it is)."""
    from archlab.plan import RunConfig

    try:
        return RunConfig.parse(config, where="recorded config").to_dict()
    except Exception:  # noqa: BLE001  (a config this version cannot read is shown as recorded)
        return config


def collect(plan: PlanConfig, specs: list[RunSpec], store: RunStore, sizes: bool = True) -> list[RunRow]:
    rows = []
    for spec in specs:
        run = store.run(spec.id)
        status = run.status()
        records = run.metrics.read()
        steps = [r for r in records if "step" in r]
        tokens = [r["tokens_seen"] for r in records if isinstance(r.get("tokens_seen"), int | float)]
        config = with_defaults(run.read_config()) if run.has_config() else (spec.config.to_dict() if spec.config else {})
        rows.append(
            RunRow(
                spec=spec,
                status=status.get("status", "pending"),
                message=status.get("message", ""),
                evals=run.eval_results(),
                curve=[(r["step"], r["loss"]) for r in records if "loss" in r],
                eval_curve=[(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r],
                config=config,
                env=run.read_env(),
                samples=run.read_samples(),
                error=run.error_line(),
                record={**status, "summary": run.summary()},
                tokens_seen=int(max(tokens)) if tokens else None,
                step=status.get("step") or (max(r["step"] for r in steps) if steps else None),
                size=run_size(spec.config) if sizes else None,
                best={k: status[k] for k in ("best_step", "best_metric", "step") if k in status},
            )
        )
    return rows
