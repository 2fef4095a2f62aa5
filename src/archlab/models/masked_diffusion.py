"""The masked-diffusion objective (LLaDA, Dream): what bidirectional runs train on and are scored by.

A model that sees the whole sequence (a bidirectional memory, a diffusion LM such as Dream) cannot be
trained or scored by next-token loss: the target is in its input. The masked-diffusion loss hides the
targets instead. Per sequence, draw ``t ~ U(0, 1)`` and a masking probability ``p = (1 - EPS) t + EPS``;
replace each scorable token by the mask token with probability ``p``; score the cross-entropy of the
masked tokens only, each weighted ``1 / p``. Averaged over ``t`` and the masks this is an upper bound on
the sequence's negative log-likelihood (the ELBO of a masked diffusion LM), so its per-token value is
comparable across such runs, and bits per byte follows as for any loss.

Conventions (LLaDA's and Dream's public code):

- masks are drawn independently per token (Bernoulli ``p``), as both do, not an exact fraction;
- normalisation: the weighted sum over a batch is divided by its number of scorable tokens, which is
  LLaDA's ``/ (batch * length)`` for packed pretraining rows. Prompt and padding tokens (label -100) are
  never masked and never scored, as LLaDA's SFT keeps the prompt clean; unlike LLaDA's SFT, sequences are
  weighted by their answer length (token-weighted, like the next-token loss), so gradient accumulation
  and data parallelism sum micro-batches exactly (see ``archlab.train.objectives``);
- Dream's shift: the logits at position ``i - 1`` predict token ``i`` (Dream keeps the layout of the
  autoregressive model it starts from, so a causal base predicts a masked token from the position before
  it). Position 0 is therefore never masked. LLaDA's unshifted layout is not implemented.

Masks come from a generator seeded per sequence (``row_seed``), so a sequence gets the same mask whatever
its batch, micro-batch size or rank, training resumes exactly, and evaluation uses fixed masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from archlab.models.scoring import LossTotals, totals_from_rows

EPS = 1e-3  # smallest masking probability (LLaDA's eps)


def row_seed(*parts: int) -> int:
    """A 63-bit seed from integers (train seed, data position, example index, ...)."""
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + int(part) + 1) % (2**63 - 1)
    return seed


def draw_masks(scorable: torch.Tensor, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: masking probability ``p`` [B] and the masked positions [B, T] (only scorable ones).

    Args:
        scorable: [B, T] bool, the positions that may be masked and scored.
        seeds: one seed per row.
    """
    probs, masks = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        t = torch.rand((), generator=gen)
        probs.append((1 - EPS) * t + EPS)
        masks.append(torch.rand(scorable.shape[1], generator=gen))
    p = torch.stack(probs).to(scorable.device)
    return p, (torch.stack(masks).to(scorable.device) < p[:, None]) & scorable


@dataclass
class MaskedBatch:
    """One batch under the objective; every [B, T - 1] tensor is indexed by the predicted position - 1."""

    inputs: torch.Tensor  # [B, T] input ids with the masked tokens replaced by the mask token
    targets: torch.Tensor  # [B, T - 1] the ids at positions 1..T-1 (-100 where unscorable)
    scorable: torch.Tensor  # [B, T - 1] bool
    masked: torch.Tensor  # [B, T - 1] bool, a subset of scorable
    p: torch.Tensor  # [B] masking probability of each row

    @classmethod
    def make(cls, batch: dict, mask_token_id: int, seeds: list[int]) -> MaskedBatch:
        targets = batch["labels"][:, 1:]
        scorable = targets != -100
        p, masked = draw_masks(scorable, seeds)
        inputs = batch["input_ids"].clone()
        inputs[:, 1:][masked] = mask_token_id
        return cls(inputs, targets, scorable, masked, p)

    def weighted_nll(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, T - 1] cross-entropy of the masked targets divided by their row's ``p``; 0 elsewhere.

        ``logits`` are the model's outputs on ``inputs`` ([B, T, V]); Dream's shift aligns them.
        """
        shifted = logits[:, :-1].float()
        nll = F.cross_entropy(shifted.flatten(0, 1), self.targets.clamp(min=0).flatten(), reduction="none")
        return nll.view_as(self.targets) * self.masked / self.p[:, None]


def masked_diffusion_loss_sum(model: nn.Module, batch: dict, mask_token_id: int, seeds: list[int]) -> torch.Tensor:
    """The objective summed over a batch (divide by its scorable-token count for the mean)."""
    noised = MaskedBatch.make(batch, mask_token_id, seeds)
    logits = model(input_ids=noised.inputs, attention_mask=batch.get("attention_mask")).logits
    return noised.weighted_nll(logits).sum()


@dataclass
class MaskedTotals(LossTotals):
    """Totals of the objective: ``nll`` is the weighted sum, ``tokens`` the scorable tokens (the
    normaliser), ``masked`` the masked tokens whose top-1 hits ``correct`` counts."""

    masked: int = 0

    def add(self, other: LossTotals) -> None:
        super().add(other)
        self.masked += getattr(other, "masked", 0)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.masked, 1)


@torch.no_grad()
def score_masked_batch(model: nn.Module, batch: dict, mask_token_id: int, seeds: list[int],
                       token_bytes: torch.Tensor | None = None) -> MaskedTotals:
    """The objective on one batch with the masks ``seeds`` give (fixed seeds: a fixed estimate)."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    noised = MaskedBatch.make(batch, mask_token_id, seeds)
    logits = model(input_ids=noised.inputs, attention_mask=batch.get("attention_mask")).logits
    nll = noised.weighted_nll(logits)
    hits = (logits[:, :-1].argmax(-1) == noised.targets) & noised.masked
    base = totals_from_rows(nll, noised.scorable, noised.targets, token_bytes, int(hits.sum()))
    return MaskedTotals(**vars(base), masked=int(noised.masked.sum()))
