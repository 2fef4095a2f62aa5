"""Seed 004's success criteria as a report table: each row met / not met from the measured numbers.

The criteria are the seed's TRAINING_PLAN targets; nothing here is a reported or hard-coded result. A run's BPB is
``long_ppl.bits_per_byte`` (the same held-out bytes for every tokenizer) when it has that eval, else
``loss.bits_per_byte``; intervals are the evals' own 95% intervals. Throughput counts only when measured on an
A100 (the seed's condition); elsewhere the row says where it was measured and stays "not met".

``sizes_view`` states every run's parameter counts: all of them, and the non-embedding trainable ones that the
plan's ``match: {count: non_embedding}`` compares (the byte latent model's hash n-gram tables and frozen entropy
model make its total several times its compute-bearing part) and, for a matched run, its difference from the
nearest byte latent model and the width the match chose.
"""

from __future__ import annotations

import json
from functools import lru_cache
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


@lru_cache(maxsize=64)
def _counts(config_json: str) -> tuple[int, int] | None:
    from archlab.plan import RunConfig
    from archlab.plan.match import _count
    from archlab.report.sizes import _vocab

    config = RunConfig.parse(json.loads(config_json), where="report")
    vocab = _vocab(config.data.tokenizer)
    if vocab is None or config.model.pretrained:
        return None
    try:
        return _count(config, vocab), _count(config, vocab, "non_embedding")
    except Exception:  # noqa: BLE001  (an unbuildable run shows — ; its own status says why)
        return None


def _matched(config) -> str:
    match = getattr(config, "match", None)
    if match is None:
        return ""
    value = config.to_dict()
    for part in match.by.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return f"{match.by.rsplit('.', 1)[-1]} = {value}"


def sizes_view(rows: list[RunRow], plots: Path) -> Section | None:
    """Parameter counts of every run of a plan with a byte latent model (from its config, so pending runs too)."""
    if not any(getattr(getattr(r.spec.config, "model", None), "arch", None) == "byte_latent" for r in rows):
        return None
    counted = [(r, _counts(json.dumps(r.spec.config.to_dict(), sort_keys=True, default=str)))
               for r in rows if hasattr(r.spec.config, "to_dict")]
    latent = [c[1] for r, c in counted if c and r.spec.config.model.arch == "byte_latent"]
    body = []
    for row, counts in counted:
        if counts is None:
            body.append([row.spec.title, "—", "—", "—", _matched(row.spec.config)])
            continue
        nearest = min(latent, key=lambda n: abs(n - counts[1])) if latent else None
        matched = getattr(row.spec.config, "match", None) is not None
        delta = f"{(counts[1] - nearest) / nearest:+.1%}" if nearest and matched else ""
        body.append([row.spec.title, f"{counts[0]:,}", f"{counts[1]:,}", delta, _matched(row.spec.config)])
    header = ["Variant", "parameters (all)", "non-embedding, trainable", "matched: vs nearest byte latent model",
              "sized by match"]
    note = ("\n\nNon-embedding, trainable: what training updates, less lookup tables (byte/token, position and "
            "hash n-gram embeddings, an untied output embedding); the frozen entropy model is not counted. The "
            "baselines' widths are chosen at plan time (match: {count: non_embedding}) to equal the latent model's "
            "within 2%.")
    return "Parameter counts (baselines matched to the byte latent model)", to_markdown([header, *body]) + note, []
