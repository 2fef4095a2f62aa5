"""Peak memory of one training step (CUDA peak allocated on GPU, process peak RSS on CPU)."""

from __future__ import annotations

import resource

import torch
from pydantic import Field

from archlab.config import Config
from archlab.evals.base import ANY_OBJECTIVE, EvalContext, EvalResult, register_eval
from archlab.evals.lib.inputs import random_ids


class MemoryParams(Config):
    seq_len: int = Field(128, ge=2, description="sequence length of the measured training step")
    batch_size: int = Field(4, ge=1, description="batch size of the measured training step")


@register_eval("memory", MemoryParams, metrics=("peak_memory_mb", "parameter_memory_mb"), objectives=ANY_OBJECTIVE)
def memory(ctx: EvalContext, params: MemoryParams) -> EvalResult:
    """Peak memory of one forward+backward: CUDA peak allocated on GPU, peak RSS of the process on CPU."""
    device = ctx.device
    ids = random_ids(ctx, params.batch_size, params.seq_len)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ctx.model.train()
    ctx.model(input_ids=ids, labels=ids).loss.backward()
    ctx.model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss"
    params_mb = sum(p.numel() * p.element_size() for p in ctx.model.parameters()) / 2**20
    return EvalResult(
        metrics={"peak_memory_mb": peak, "parameter_memory_mb": params_mb},
        n=1,
        headline="peak_memory_mb",
        details={"kind": kind, "seq_len": params.seq_len, "batch_size": params.batch_size},
    )
