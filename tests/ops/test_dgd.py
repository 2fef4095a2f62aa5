"""Delta Gradient Descent writes: the chunked form (decayed sums + a triangular solve) equals the token loop."""

from __future__ import annotations

import pytest
import torch

from archlab.ops.dgd import dgd_chunked, dgd_reference


@pytest.mark.parametrize("precond", [True, False])
@pytest.mark.parametrize("length", [1, 5, 8, 64])
def test_chunked_equals_reference(precond, length):
    """Outputs and the gradients w.r.t. every input (k, u, e, s carry the graph in hope_selfmod)."""
    g = torch.Generator().manual_seed(length)
    B, D, H = 2, 5, 7
    W1 = torch.randn(B, D, H, generator=g).requires_grad_()
    W2 = torch.randn(B, H, D, generator=g).requires_grad_()
    k = torch.nn.functional.normalize(torch.randn(B, length, D, generator=g), dim=-1).requires_grad_()
    u, s = torch.randn(B, length, H, generator=g).requires_grad_(), torch.randn(B, length, H, generator=g).requires_grad_()
    e = torch.randn(B, length, D, generator=g).requires_grad_()
    eta = (0.3 * torch.rand(B, length, generator=g)).requires_grad_()
    alpha = (0.3 + 0.7 * torch.rand(B, length, generator=g)).requires_grad_()
    res = {}
    for name, fn in (("ref", dgd_reference), ("chunk", dgd_chunked)):
        a, b = fn(W1, W2, k, u, e, s, eta, alpha, precond)
        loss = (a * torch.linspace(-1, 1, a.numel()).reshape(a.shape)).sum() + (b ** 2).sum()
        res[name] = (a, b, torch.autograd.grad(loss, [W1, W2, k, u, e, s, eta, alpha]))
    for x, y in zip(res["ref"][:2], res["chunk"][:2], strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    for x, y in zip(res["ref"][2], res["chunk"][2], strict=True):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


def test_the_preconditioner_decays_the_weight_along_the_current_key():
    """With zero error, one DGD step shrinks W2 k by (alpha - eta) and leaves directions orthogonal to k alone."""
    W2 = torch.randn(1, 3, 4)
    k = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    zeros = torch.zeros(1, 1, 3)
    _, new = dgd_chunked(torch.zeros(1, 4, 3), W2, k, zeros, torch.zeros(1, 1, 4), zeros,
                         torch.tensor([[0.25]]), torch.tensor([[1.0]]))
    torch.testing.assert_close(new[..., 0], 0.75 * W2[..., 0])
    torch.testing.assert_close(new[..., 1:], W2[..., 1:])
