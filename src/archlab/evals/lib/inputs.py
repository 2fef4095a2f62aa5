"""Model inputs shared by the timing and memory evals."""

from __future__ import annotations

import torch

from archlab.evals.base import EvalContext


def random_ids(ctx: EvalContext, batch: int, length: int) -> torch.Tensor:
    """Seeded random token ids: a timing or a memory peak does not depend on the text."""
    gen = torch.Generator().manual_seed(ctx.seed)
    return torch.randint(0, len(ctx.tokenizer), (batch, length), generator=gen).to(ctx.device)
