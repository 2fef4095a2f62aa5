"""Seed 001's Duo-Predict scored on both streams separately: next-token on the real tokens, fill-the-gap on the
mask slots (each M after a_m predicting a_m from a_<m and a_{m+1}), under the exact interleaved mask."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from archlab.config import Config
from archlab.errors import ArchlabError
from archlab.evals.base import EvalContext, EvalResult, register_eval
from archlab.evals.lib.views import simple_view
from archlab.evals.lib.stats import ratio_interval, wilson_interval
from archlab.models.gpt2_variants import GPT2VariantsForCausalLM, duo_interleave

STREAMS = ("next_token", "fill")


class DuoPredictParams(Config):
    split: Literal["validation", "test"] = Field("validation", description="held-out split to score")
    max_examples: int = Field(64, ge=1, description="cap on blocks scored")


@register_eval("duo_predict", DuoPredictParams,
               metrics=tuple(f"{s}_{m}" for s in STREAMS for m in ("loss", "accuracy")))
@torch.no_grad()
def duo_predict(ctx: EvalContext, params: DuoPredictParams) -> EvalResult:
    """Duo-Predict: next-token loss/accuracy on the real stream and fill-the-gap loss/accuracy on the M stream."""
    model = ctx.model
    if not isinstance(model, GPT2VariantsForCausalLM) or ctx.data is None:
        raise ArchlabError("eval 'duo_predict' scores an archlab_gpt2 model (model.arch: gpt2_variants) on its data")
    split = getattr(ctx.data, params.split)
    n = min(len(split), params.max_examples)
    if n == 0:
        raise ArchlabError(f"eval 'duo_predict': the {params.split} split is empty")
    sums = {s: {"nll": [], "tokens": [], "correct": 0} for s in STREAMS}
    was_training = model.training
    model.eval()
    for start in range(0, n, ctx.batch_size):
        batch = ctx.data.batch(split, list(range(start, min(start + ctx.batch_size, n))))
        batch = {k: v.to(ctx.device) for k, v in batch.items()}
        duo = duo_interleave(batch["input_ids"], batch["labels"], model.config.duo_mask_id, batch["attention_mask"])
        logits = model.duo_logits(duo).float()
        nll = F.cross_entropy(logits.flatten(0, 1), duo.labels.flatten().clamp(min=0), reduction="none")
        nll = nll.view_as(duo.labels)
        hits = logits.argmax(-1) == duo.labels
        for stream, cols in (("next_token", slice(0, None, 2)), ("fill", slice(1, None, 2))):
            keep = duo.labels[:, cols] != -100
            sums[stream]["nll"] += (nll[:, cols] * keep).sum(1).tolist()
            sums[stream]["tokens"] += keep.sum(1).tolist()
            sums[stream]["correct"] += int((hits[:, cols] & keep).sum())
    model.train(was_training)
    metrics, ci95 = {}, {}
    for stream, s in sums.items():
        tokens = sum(s["tokens"])
        metrics[f"{stream}_loss"] = sum(s["nll"]) / max(tokens, 1)
        metrics[f"{stream}_accuracy"] = s["correct"] / max(tokens, 1)
        ci95[f"{stream}_loss"] = ratio_interval(s["nll"], s["tokens"])
        ci95[f"{stream}_accuracy"] = wilson_interval(s["correct"], tokens)
    return EvalResult(metrics=metrics, n=sum(sums["next_token"]["tokens"]), ci95=ci95, headline="fill_accuracy",
                      details={"split": params.split, "examples": n, "fill_tokens": sum(sums["fill"]["tokens"]),
                               "interval_unit": "example (loss), token (accuracy)",
                               "note": "the fill target leaks through depth (a_{m+1}'s state has seen a_m)"})


simple_view("duo_predict", "Duo-Predict: next-token (real stream) and fill-the-gap (mask slots)",
            [("next-token loss", "next_token_loss"), ("next-token acc", "next_token_accuracy"),
             ("fill loss", "fill_loss"), ("fill acc", "fill_accuracy")], details=("fill_tokens",))
