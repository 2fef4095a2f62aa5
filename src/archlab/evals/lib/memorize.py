"""archlab's test-time memorization protocol, and the one place the evals call it.

A model that can learn in context (Titans/HOPE-style fast weights, a CMS that updates at test time, ...)
exposes two methods::

    model.memorize(input_ids: LongTensor[batch, time], attention_mask: LongTensor[batch, time]) -> None
        Update the model's internal memory from these tokens (no gradient to the caller; the model
        decides how: inner optimizer steps, delta-rule writes, ...). Later forward passes use it.

    model.reset_memory() -> None
        Forget everything memorized since construction (or since the last reset).

The contract the evals keep (the public nested_learning harness behind seed 003 broke it: it memorized
the prompt with its correct answer): ``memorize`` is only ever given *context* tokens, never a continuation, needle answer or held-out segment that is then
scored. Every eval with ``memorize: true`` reports the numbers with and without memorization, and
resets the memory before and after each item so items cannot leak into one another.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from archlab.errors import ArchlabError


@runtime_checkable
class Memorizer(Protocol):
    """The two methods a test-time-memorizing model implements."""

    def memorize(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None: ...

    def reset_memory(self) -> None: ...


def can_memorize(model: nn.Module) -> bool:
    return callable(getattr(model, "memorize", None)) and callable(getattr(model, "reset_memory", None))


def require_memorize(model: nn.Module, eval_name: str) -> None:
    """Fail early, with the fix, when an eval asks for memorization the model does not offer."""
    if not can_memorize(model):
        raise ArchlabError(
            f"eval '{eval_name}': memorize=true but {type(model).__name__} has no memorize()/reset_memory() "
            f"(see archlab/evals/README.md, 'Test-time memorization'); set memorize: false"
        )


def reset(model: nn.Module) -> None:
    """Reset the memory of a memorizing model; a no-op for any other model."""
    if can_memorize(model):
        model.reset_memory()


@contextmanager
def memorized(model: nn.Module, context: list[int] | torch.Tensor | None) -> Iterator[None]:
    """Memorize ``context`` (context tokens only) for the duration of the block, reset on both sides.

    ``context=None`` runs the block with a freshly reset memory and memorizes nothing: the
    without-memorization baseline of the same item.
    """
    reset(model)
    try:
        if context is not None:
            ids = torch.as_tensor(context, dtype=torch.long).reshape(1, -1)
            ids = ids.to(next(model.parameters()).device)
            model.memorize(ids, torch.ones_like(ids))  # the model manages its own gradients
        yield
    finally:
        reset(model)
