"""Scoring any Hugging Face causal LM on token batches: summed NLL, token counts, bytes and top-1 hits.

Shared by the trainer's periodic validation and the loss evals, so both report the same numbers.

Bits per byte counts only tokens that stand for bytes of text: a special token (EOS between packed
documents, BOS, padding, a mask token) has zero UTF-8 bytes, so its nats stay in the loss but not in
bits per byte, whose numerator and denominator then cover the same tokens.
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
    byte_nll: float = 0.0  # summed NLL of the scored tokens that stand for bytes (special tokens left out)
    rows: list[tuple[float, int, int, float]] = field(default_factory=list)  # per example: (nll, tokens, bytes,
    # byte_nll)

    def add(self, other: LossTotals) -> None:
        self.nll += other.nll
        self.tokens += other.tokens
        self.correct += other.correct
        self.bytes += other.bytes
        self.byte_nll += other.byte_nll
        self.rows.extend(other.rows)

    @property
    def loss(self) -> float:
        return self.nll / max(self.tokens, 1)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 50.0))

    @property
    def bits_per_byte(self) -> float | None:
        return self.byte_nll / math.log(2) / self.bytes if self.bytes else None

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.tokens, 1)


@torch.no_grad()
def score_batch(model: nn.Module, batch: dict, token_bytes: torch.Tensor | None = None) -> LossTotals:
    """Sum of next-token NLL over positions whose label is not -100 (bytes and byte NLL: see the module doc)."""
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    mask = batch.get("attention_mask")
    logits = model(input_ids=ids, attention_mask=None if mask is None else mask.to(device)).logits[:, :-1].float()
    labels = batch["labels"][:, 1:].to(device)
    keep = labels != -100
    nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten().clamp(min=0), reduction="none").view_as(labels)
    hits = (logits.argmax(-1) == labels) & keep
    return totals_from_rows(nll, keep, labels, token_bytes, int(hits.sum()))


def totals_from_rows(nll: torch.Tensor, keep: torch.Tensor, targets: torch.Tensor, token_bytes: torch.Tensor | None,
                     correct: int) -> LossTotals:
    """[B, T] per-position NLL, the positions scored and their target ids -> totals with per-row sums."""
    target_bytes = token_bytes.to(nll.device)[targets.clamp(min=0)] * keep if token_bytes is not None else keep * 0
    row_nll, row_tokens, row_bytes = (nll * keep).sum(1), keep.sum(1), target_bytes.sum(1)
    row_byte_nll = (nll * (target_bytes > 0)).sum(1)
    rows = list(zip(row_nll.tolist(), row_tokens.tolist(), row_bytes.tolist(), row_byte_nll.tolist(), strict=True))
    return LossTotals(nll=float(row_nll.sum()), tokens=int(row_tokens.sum()), correct=correct,
                      bytes=int(row_bytes.sum()), byte_nll=float(row_byte_nll.sum()), rows=rows)
