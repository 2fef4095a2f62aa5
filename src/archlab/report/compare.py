"""``archlab compare RUN_A RUN_B`` and ``archlab status PLAN``: what differs between two runs, where a plan stands.

Both read run folders through RunDir only. A metric difference is called significant when the two 95%
intervals do not overlap (the report's rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archlab.errors import ArchlabError
from archlab.evals.lib.views import fmt
from archlab.plan import PlanConfig, RunSpec, RunStore
from archlab.report.html import config_diff, lower_is_better, significant
from archlab.rundir import RunDir


@dataclass
class RunFiles:
    """What compare needs of one run folder."""

    path: Path
    config: dict[str, Any]
    evals: dict[str, dict[str, Any]]
    status: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> RunFiles:
        run = RunDir(path)
        if not run.has_config():
            raise ArchlabError(f"{path} is not a run folder (no config.yaml); pass runs/<plan>/<run-id>")
        return cls(Path(path), run.read_config(), run.eval_results(), run.status())


def resolve_run(text: str, runs_dir: Path) -> Path:
    """A run folder from a path, ``<plan>/<run-id>`` under the runs dir, or a unique (``<plan>/``) run-id prefix."""
    for candidate in (Path(text), runs_dir / text):
        if (candidate / RunDir.CONFIG).is_file():
            return candidate
    pattern = f"{text}*/{RunDir.CONFIG}" if "/" in text else f"*/{text}*/{RunDir.CONFIG}"  # <plan>/<id prefix>
    matches = sorted(p.parent for p in runs_dir.glob(pattern))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ArchlabError(f"run '{text}' matches {len(matches)} run folders under {runs_dir} "
                           f"({', '.join(str(m.relative_to(runs_dir)) for m in matches[:4])}); give <plan>/<run-id>")
    raise ArchlabError(f"no run folder '{text}' (a path, <plan>/<run-id> under {runs_dir}, or a run-id prefix)")


def compare_configs(a: RunFiles, b: RunFiles) -> list[list[str]]:
    """[key, A, B] for every resolved key that differs."""
    from archlab.report.collect import RunRow

    rows = [RunRow(spec=RunSpec(id=str(r.path), labels={}, config=None), status="", message="", evals={},
                   config=r.config) for r in (a, b)]
    return [[key, _show(x), _show(y)] for key, x, y in config_diff(rows[1], rows[0])]


def _show(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def compare_metrics(a: RunFiles, b: RunFiles, plan: PlanConfig | None = None) -> list[list[str]]:
    """[metric, A [ci], B [ci], B−A, verdict] for every numeric metric both runs have."""
    out = []
    for name in sorted(set(a.evals) & set(b.evals)):
        pa, pb = a.evals[name], b.evals[name]
        for key in pa.get("metrics", {}):
            va, vb = pa["metrics"].get(key), pb.get("metrics", {}).get(key)
            if not isinstance(va, int | float) or not isinstance(vb, int | float):
                continue
            ca, cb = pa.get("ci95", {}).get(key), pb.get("ci95", {}).get(key)
            dotted = f"{name}.{key}"
            lower = lower_is_better(dotted, plan)
            if ca and cb:
                if significant(tuple(ca), tuple(cb)):
                    verdict = "B better" if (vb < va) == lower else "B worse"
                else:
                    verdict = "n.s."
            else:
                verdict = "no interval"
            out.append([dotted, _with_ci(va, ca), _with_ci(vb, cb), f"{'+' if vb - va >= 0 else ''}{vb - va:.4g}",
                        verdict])
    return out


def _with_ci(value: float, ci: list[float] | None) -> str:
    return fmt(value) + (f" [{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]" if ci else "")


# ------------------------------------------------------------------------------------------------ status
def plan_status(plan: PlanConfig, specs: list[RunSpec], store: RunStore) -> tuple[list[list[str]], dict[str, int]]:
    """[run, status, step, loss, headline, note] per run and the count per status, read without running."""
    rows, counts = [], {}
    for spec in specs:
        run = store.run(spec.id)
        record = run.status()
        status = record.get("status", "pending")
        counts[status] = counts.get(status, 0) + 1
        logs = [r for r in run.metrics.read() if "loss" in r]
        step = record.get("step") or (logs[-1]["step"] if logs else None)
        name, _, key = plan.headline.partition(".")
        headline = run.eval_results().get(name, {}).get("metrics", {}).get(key)
        note = ""
        if status in ("failed", "diverged", "interrupted"):
            note = run.error_line() or record.get("message", "")
        rows.append([spec.title, status, "—" if step is None else str(step),
                     fmt(logs[-1]["loss"]) if logs else "—",
                     fmt(headline) if isinstance(headline, int | float) else "—", note])
    return rows, counts
