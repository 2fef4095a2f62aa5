"""What one micro-batch adds to an optimizer step: a loss *summed* over its scored tokens, and its weight.

An optimizer step's loss is the mean over every scored token of the step, across micro-batches (gradient
accumulation) and data-parallel ranks. Each micro-batch back-propagates its summed loss times
``token_weight(global_tokens, world_size)``, where ``global_tokens`` is the step's scored-token count summed
over ranks. DDP averages gradients over ranks; the ``world_size`` factor turns that average back into a
sum, so the gradient is the one of the global token mean however unevenly the tokens fall on ranks and
micro-batches. (A mean of per-rank means would give a rank's few tokens the weight of another's many.)

The masked-diffusion objective (``archlab.models.masked_diffusion``) is summed and weighted the same way:
it scores the same tokens, those after the first whose label is not -100.
"""

from __future__ import annotations

import torch
from torch import nn


def scored_tokens(batch: dict) -> int:
    """Tokens the loss scores: every position after the first whose label is not -100."""
    return int((batch["labels"][:, 1:] != -100).sum())


def token_weight(global_tokens: int, world_size: int) -> float:
    """The factor on a micro-batch's summed loss that makes DDP's gradient mean the global token mean."""
    return world_size / global_tokens


def causal_lm_sum(model: nn.Module, batch: dict, tokens: int) -> torch.Tensor:
    """Summed next-token loss of a micro-batch (the model's own mean loss times its token count).

    A micro-batch with no scored token still runs (a data-parallel rank must join the gradient
    all-reduce), and contributes exactly zero instead of the NaN of an empty mean.
    """
    out = model(**batch)
    return out.loss * tokens if tokens else out.logits.sum() * 0.0
