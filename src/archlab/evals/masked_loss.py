"""Held-out masked-diffusion loss (``masked_loss``): how masked-diffusion runs (bidirectional, Dream-style)
are scored, with the objective they train on (``archlab.models.masked_diffusion``) and fixed masks.

Each example is scored ``samples`` times, draw ``d`` of example ``i`` masked by the generator seeded
``row_seed(seed, d, i)``: the same masks for every run and every batch size, so runs compare on the same
noise. The loss is the weighted masked cross-entropy per scorable token (an upper bound on the next-token
loss's nats per token, in expectation); bits per byte divides the weighted nats of byte-bearing tokens
by their bytes, as the ``loss`` eval does.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from archlab.config import Config
from archlab.errors import ArchlabError
from archlab.evals.base import EvalContext, EvalResult, register_eval
from archlab.evals.lib.stats import ratio_interval, wilson_interval
from archlab.evals.lib.views import simple_view
from archlab.models.masked_diffusion import EPS, MaskedTotals, row_seed, score_masked_batch


class MaskedLossParams(Config):
    split: Literal["validation", "test"] = Field("validation", description="held-out split to score")
    max_examples: int = Field(256, ge=1, description="cap on blocks/examples scored")
    samples: int = Field(4, ge=1, description="mask draws per example (more: a less noisy estimate)")
    seed: int = Field(0, ge=0, description="seed of the fixed masks (the same for every run)")


@register_eval("masked_loss", MaskedLossParams, metrics=("loss", "bits_per_byte", "accuracy", "mask_rate"),
               objectives=("masked_diffusion",))
def masked_loss(ctx: EvalContext, params: MaskedLossParams) -> EvalResult:
    """Held-out masked-diffusion loss, bits per byte and masked-token accuracy, with fixed masks."""
    if ctx.data is None:
        raise ArchlabError("eval 'masked_loss' needs the run's data")
    mask_id = ctx.tokenizer.mask_token_id
    if mask_id is None:
        raise ArchlabError("eval 'masked_loss' needs a tokenizer with a mask token (train.objective="
                           "masked_diffusion runs add one: data.add_mask_token)")
    split = getattr(ctx.data, params.split)
    if len(split) == 0:
        raise ArchlabError(f"eval 'masked_loss': the {params.split} split is empty (set data.validation_fraction)")
    n = min(len(split), params.max_examples)
    totals = MaskedTotals()
    for draw in range(params.samples):
        for start in range(0, n, ctx.batch_size):
            rows = list(range(start, min(start + ctx.batch_size, n)))
            seeds = [row_seed(params.seed, draw, i) for i in rows]
            totals.add(score_masked_batch(ctx.model, ctx.data.batch(split, rows), mask_id, seeds,
                                          ctx.data.token_bytes))
    ci95 = {"loss": ratio_interval([r[0] for r in totals.rows], [r[1] for r in totals.rows]),
            "accuracy": wilson_interval(totals.correct, totals.masked)}
    if totals.bytes:
        lo, hi = ratio_interval([r[3] for r in totals.rows], [r[2] for r in totals.rows])
        ci95["bits_per_byte"] = (lo / math.log(2), hi / math.log(2))
    return EvalResult(
        metrics={"loss": totals.loss, "bits_per_byte": totals.bits_per_byte, "accuracy": totals.accuracy,
                 "mask_rate": totals.masked / max(totals.tokens, 1)},
        n=totals.tokens,
        ci95=ci95,
        headline="loss",
        details={"split": params.split, "examples": n, "samples": params.samples, "seed": params.seed,
                 "masked_tokens": totals.masked, "bytes": totals.bytes, "interval_unit": "example x draw",
                 "objective": f"masked diffusion: t ~ U(0,1), p = (1 - {EPS}) t + {EPS}, CE of masked tokens / p, "
                              "per scorable token; Dream's shift (logits at i-1 predict token i)"},
    )


simple_view("masked_loss", "Masked-diffusion loss (bidirectional runs, not comparable to next-token loss)",
            [("loss", "loss"), ("bits/byte", "bits_per_byte"), ("masked-token acc", "accuracy")],
            details=("split", "samples"), order=10)
