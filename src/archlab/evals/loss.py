"""Held-out loss, perplexity, bits per byte and next-token top-1 accuracy."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from archlab.config import Config
from archlab.errors import ArchlabError
from archlab.evals.base import EvalContext, EvalResult, register_eval
from archlab.evals.lib.stats import ratio_interval, wilson_interval
from archlab.models.scoring import LossTotals, score_batch


class LossParams(Config):
    split: Literal["validation", "test"] = Field("validation", description="held-out split to score")
    max_examples: int = Field(256, ge=1, description="cap on blocks/examples scored")


@register_eval("loss", LossParams, metrics=("loss", "perplexity", "bits_per_byte", "accuracy"))
def heldout_loss(ctx: EvalContext, params: LossParams) -> EvalResult:
    """Held-out cross-entropy, perplexity, bits per byte and next-token accuracy on a data split."""
    if ctx.data is None:
        raise ArchlabError("eval 'loss' needs the run's data")
    split = getattr(ctx.data, params.split)
    if len(split) == 0:
        raise ArchlabError(f"eval 'loss': the {params.split} split is empty (set data.validation_fraction)")
    n = min(len(split), params.max_examples)
    totals = LossTotals()
    for start in range(0, n, ctx.batch_size):
        batch = ctx.data.batch(split, list(range(start, min(start + ctx.batch_size, n))))
        totals.add(score_batch(ctx.model, batch, ctx.data.token_bytes))
    return EvalResult(
        metrics={
            "loss": totals.loss,
            "perplexity": totals.perplexity,
            "bits_per_byte": totals.bits_per_byte,
            "accuracy": totals.accuracy,
        },
        n=totals.tokens,
        ci95=_intervals(totals),
        headline="loss",
        details={"split": params.split, "examples": n, "bytes": totals.bytes, "interval_unit": "example"},
    )


def _intervals(totals: LossTotals) -> dict[str, tuple[float, float]]:
    nll = [r[0] for r in totals.rows]
    out = {
        "accuracy": wilson_interval(totals.correct, totals.tokens),
        "loss": ratio_interval(nll, [r[1] for r in totals.rows]),
    }
    if totals.bytes:
        lo, hi = ratio_interval([r[3] for r in totals.rows], [r[2] for r in totals.rows])
        out["bits_per_byte"] = (lo / math.log(2), hi / math.log(2))
    return out
