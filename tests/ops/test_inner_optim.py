"""Deep momentum with the rank-1 preconditioner: batched = explicit-projector reference, and the chunked fast MLP
with it equals its token-by-token definition (outputs, final state, gradients, odd lengths, offsets)."""

from __future__ import annotations

import pytest
import torch
from tests.ops.test_cms import B, expand, meta

from archlab.ops.cms import FastState, fast_mlp_chunked, fast_mlp_reference
from archlab.ops.inner_optim import inner_update, inner_update_reference


@pytest.mark.parametrize("beta,precond", [(0.9, True), (0.5, False), (0.0, True)])
@pytest.mark.parametrize("period,length,offset", [(1, 5, 0), (4, 11, 1), (3, 13, 2)])
def test_chunked_with_the_inner_optimiser_equals_reference(beta, precond, period, length, offset):
    g = torch.Generator().manual_seed(period * 7 + length)
    n = torch.randn(B, length, 6, generator=g).requires_grad_()
    e = torch.randn(B, length, 6, generator=g).requires_grad_()
    m = meta()
    state = FastState.zeros_like(expand(m), position=offset)
    state.delta = {k: 0.1 * torch.randn_like(v) for k, v in state.delta.items()}
    state.momentum = {k: 0.1 * torch.randn_like(v) for k, v in state.delta.items()} if beta else None
    outs = {}
    for name, fn in (("ref", fast_mlp_reference), ("chunk", fast_mlp_chunked)):
        y, st = fn(n, e, expand(m), period, 0.3, state, beta=beta, precond=precond)
        loss = (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum() + sum(
            (v ** 2).sum() for v in st.delta.values())
        outs[name] = (y, st, torch.autograd.grad(loss, [n, e, *m.values()]))
    (y1, s1, g1), (y2, s2, g2) = outs["ref"], outs["chunk"]
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    for k in s1.delta:
        torch.testing.assert_close(s1.delta[k], s2.delta[k], atol=1e-5, rtol=1e-5)
        if beta:
            torch.testing.assert_close(s1.momentum[k], s2.momentum[k], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s1.n_sum, s2.n_sum, atol=1e-5, rtol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_the_preconditioned_step_leaves_the_mean_input_direction_alone():
    g = {"W1": torch.randn(2, 5, 4), "b1": torch.randn(2, 5), "W2": torch.randn(2, 4, 5), "b2": torch.randn(2, 4)}
    n_sum = torch.randn(2, 4)
    n_sum[1] = 0  # no input: no projection
    step, _ = inner_update(g, n_sum, None, 0.0, True)
    torch.testing.assert_close(torch.bmm(step["W1"][:1], n_sum[:1, :, None]), torch.zeros(1, 5, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(step["W1"][1], g["W1"][1])
    assert torch.equal(step["W2"], g["W2"])
    mom = {k: torch.randn_like(v) for k, v in g.items()}
    fast, m1 = inner_update(g, n_sum, mom, 0.8, True)
    ref, m2 = inner_update_reference(g, n_sum, mom, 0.8, True)
    for k in g:
        torch.testing.assert_close(fast[k], ref[k], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(m1[k], m2[k], atol=1e-6, rtol=1e-5)
