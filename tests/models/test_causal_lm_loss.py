"""The shared next-token loss: shifting the labels scores exactly what slicing the logits scored."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from archlab.nn.loss import causal_lm_loss


def test_shifted_labels_equal_sliced_logits_with_ignored_tokens():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11, requires_grad=True)
    labels = torch.randint(0, 11, (3, 7))
    labels[0, 3] = -100
    labels[2, :4] = -100
    ours = causal_lm_loss(logits, labels)
    sliced = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    torch.testing.assert_close(ours, sliced)
    g_ours, = torch.autograd.grad(ours, logits)
    g_sliced, = torch.autograd.grad(sliced, logits)
    torch.testing.assert_close(g_ours, g_sliced)
    assert g_ours[:, -1].abs().sum() == 0  # the last position has no next token to score


def test_bf16_logits_are_scored_in_fp32():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 9).bfloat16()
    labels = torch.randint(0, 9, (2, 5))
    loss = causal_lm_loss(logits, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, causal_lm_loss(logits.float(), labels))
