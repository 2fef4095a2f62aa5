"""The next-token loss every archlab causal LM computes in its forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits[:, t]`` against ``labels[:, t + 1]`` (-100: not scored), in fp32.

    The labels are shifted, not the logits: slicing the vocabulary-sized logits would copy them forward and
    fill a full-size zero gradient backward (about an eighth of a small model's training step on CPU).
    """
    targets = F.pad(labels[:, 1:], (0, 1), value=-100)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
