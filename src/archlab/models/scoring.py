"""Scoring any Hugging Face causal LM on token batches: summed NLL, token counts, bytes and top-1 hits.

Shared by the trainer's periodic validation and the loss evals, so both report the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LossTotals:
    nll: float = 0.0  # summed natural-log loss over scored tokens
    tokens: int = 0
    correct: int = 0  # next-token top-1 hits
    bytes: int = 0  # UTF-8 bytes of the scored tokens (0 when unknown)
    rows: list[tuple[float, int, int]] = field(default_factory=list)  # per example: (nll, tokens, bytes)

    def add(self, other: LossTotals) -> None:
        self.nll += other.nll
        self.tokens += other.tokens
        self.correct += other.correct
        self.bytes += other.bytes
        self.rows.extend(other.rows)

    @property
    def loss(self) -> float:
        return self.nll / max(self.tokens, 1)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 50.0))

    @property
    def bits_per_byte(self) -> float | None:
        return self.nll / math.log(2) / self.bytes if self.bytes else None

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.tokens, 1)


@torch.no_grad()
def score_batch(model: nn.Module, batch: dict, token_bytes: torch.Tensor | None = None) -> LossTotals:
    """Sum of next-token NLL over positions whose label is not -100."""
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    mask = batch.get("attention_mask")
    logits = model(input_ids=ids, attention_mask=None if mask is None else mask.to(device)).logits[:, :-1].float()
    labels = batch["labels"][:, 1:].to(device)
    keep = labels != -100
    nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten().clamp(min=0), reduction="none").view_as(labels)
    hits = (logits.argmax(-1) == labels) & keep
    row_bytes = (token_bytes.to(device)[labels.clamp(min=0)] * keep).sum(1) if token_bytes is not None else keep.sum(1) * 0
    row_nll, row_tokens = (nll * keep).sum(1), keep.sum(1)
    rows = list(zip(row_nll.tolist(), row_tokens.tolist(), row_bytes.tolist(), strict=True))
    return LossTotals(nll=float(row_nll.sum()), tokens=int(row_tokens.sum()), correct=int(hits.sum()),
                      bytes=int(row_bytes.sum()), rows=rows)
