"""Seed 004's success criteria as a report table: each row met / not met from the measured numbers.

The criteria are the seed's TRAINING_PLAN targets; nothing here is a reported or hard-coded result. A run's BPB is
``long_ppl.bits_per_byte`` (the same held-out bytes for every tokenizer) when it has that eval, else
``loss.bits_per_byte``; intervals are the evals' own 95% intervals. Throughput counts only when measured on an
A100 (the seed's condition); elsewhere the row says where it was measured and stays "not met".
"""

from __future__ import annotations

from pathlib import Path

from archlab.report.collect import RunRow
from archlab.report.tables import to_markdown

Section = tuple[str, str, list[Path]]

# (label, eval, metric, threshold, below): below=True means the measured value must be < threshold
CRITERIA = [
    ("BPB < 1.5 (minimum)", "bpb", "bits_per_byte", 1.5, True),
    ("BPB < 1.0 (target)", "bpb", "bits_per_byte", 1.0, True),
    ("BPB < 0.7 (stretch)", "bpb", "bits_per_byte", 0.7, True),
    ("letter counting > 80%", "probes", "accuracy/letter_count", 0.8, False),
    ("addition > 50%", "probes", "accuracy/addition", 0.5, False),
    ("compression > 3x (bytes/patch)", "compression", "bytes_per_patch", 3.0, False),
    ("throughput > 50 KB/s on A100 (generation)", "speed", "generate_bytes_per_second", 50_000.0, False),
]


def _bpb(row: RunRow) -> tuple[float | None, tuple[float, float] | None, str]:
    for name in ("long_ppl", "loss"):
        value = row.metric(f"{name}.bits_per_byte")
        if value is not None:
            return value, row.interval(f"{name}.bits_per_byte"), name
    return None, None, ""


def _cell(row: RunRow, source: str, metric: str, threshold: float, below: bool) -> str:
    if source == "bpb":
        value, ci, where = _bpb(row)
    else:
        value, ci, _where = row.metric(f"{source}.{metric}"), row.interval(f"{source}.{metric}"), source
    if value is None:
        return "not measured"
    met = value < threshold if below else value > threshold
    shown = f"{value:,.0f}" if threshold >= 1000 else f"{value:.3f}"
    if ci:
        shown += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        # an interval that straddles the threshold is not a clear result either way
        if (ci[0] < threshold < ci[1]):
            shown += " (interval spans the threshold)"
    if source == "speed":
        device = str(row.evals.get("speed", {}).get("details", {}).get("device", "?"))
        if "A100" not in device:
            return f"{shown} B/s on {device}: not met (not measured on an A100)"
    return f"{shown} — {'met' if met else 'not met'}"


def criteria_view(rows: list[RunRow], plots: Path) -> Section | None:
    """One row per criterion, one column per run of the plan with a byte-level or patching model."""
    have = [r for r in rows if r.evals]
    if not any(getattr(getattr(r.spec.config, "model", None), "arch", None) == "byte_latent" for r in have):
        return None
    header = ["Criterion (seed 004)", *[r.spec.title for r in have]]
    body = [[label, *[_cell(r, source, metric, threshold, below) for r in have]]
            for label, source, metric, threshold, below in CRITERIA]
    note = ("\n\nBPB: long_ppl (same held-out bytes for every tokenizer) where run, else the loss eval. "
            "Baselines are listed for comparison; the criteria are the seed model's.")
    return "Seed 004 success criteria (measured)", to_markdown([header, *body]) + note, []
