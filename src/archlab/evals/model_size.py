"""The model's parameter count, so a report table shows sizes next to losses (matched-size baselines)."""

from __future__ import annotations

from archlab.config import Config
from archlab.evals.base import ANY_OBJECTIVE, EvalContext, EvalResult, register_eval


class ModelSizeParams(Config):
    pass


@register_eval("model_size", ModelSizeParams, metrics=("parameters", "trainable_parameters"), objectives=ANY_OBJECTIVE)
def model_size(ctx: EvalContext, params: ModelSizeParams) -> EvalResult:
    """Number of parameters (tied weights counted once) and how many of them train."""
    unique = {id(p): p for p in ctx.model.parameters()}.values()
    total = sum(p.numel() for p in unique)
    trainable = sum(p.numel() for p in unique if p.requires_grad)
    return EvalResult(metrics={"parameters": float(total), "trainable_parameters": float(trainable)}, n=1,
                      headline="parameters")
