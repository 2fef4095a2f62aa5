"""The chunked fast-MLP write (CMS level / Titans memory) equals its token-by-token definition."""

from __future__ import annotations

import pytest
import torch

from archlab.ops.cms import FastState, fast_mlp_chunked, fast_mlp_reference

B, D, H = 2, 6, 10


def meta(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"W1": (H, D), "b1": (H,), "W2": (D, H), "b2": (D,)}
    return {k: (torch.randn(*s, generator=g) * 0.5).requires_grad_() for k, s in shapes.items()}


def expand(m):
    return {k: v.unsqueeze(0).expand(B, *v.shape) for k, v in m.items()}


@pytest.mark.parametrize("period,length,offset", [(1, 7, 0), (4, 11, 0), (3, 13, 2), (5, 4, 1)])
def test_chunked_equals_reference(period, length, offset):
    g = torch.Generator().manual_seed(1)
    n = torch.randn(B, length, D, generator=g).requires_grad_()
    e = torch.randn(B, length, D, generator=g).requires_grad_()
    m = meta()
    # a carried state: earlier writes and a half-filled chunk
    state = FastState.zeros_like(expand(m), position=offset)
    state.delta = {k: 0.1 * torch.randn_like(v) for k, v in state.delta.items()}
    state.pending = {k: 0.1 * torch.randn_like(v) for k, v in state.pending.items()}
    outs = {}
    for name, fn in (("ref", fast_mlp_reference), ("chunk", fast_mlp_chunked)):
        y, st = fn(n, e, expand(m), period, 0.3, state)
        loss = (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum() + sum(
            (v ** 2).sum() for v in st.delta.values())
        grads = torch.autograd.grad(loss, [n, e, *m.values()])
        outs[name] = (y, st, grads)
    (y1, s1, g1), (y2, s2, g2) = outs["ref"], outs["chunk"]
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    assert s1.position == s2.position == offset + length
    for k in s1.delta:
        torch.testing.assert_close(s1.delta[k], s2.delta[k], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(s1.pending[k], s2.pending[k], atol=1e-5, rtol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert g1[1].abs().sum() > 0  # the error reaches the outputs through the writes (a self-modifier learns)


def test_a_write_moves_the_output_against_the_error():
    """One chunk written with error e: the next read of the same input moves by about -lr * (J J^T) e."""
    m = expand(meta())
    n = torch.randn(B, 4, D)
    e = torch.randn(B, 4, D)
    y0, st = fast_mlp_chunked(n, e, m, 4, 1e-3)
    y1, _ = fast_mlp_chunked(n, torch.zeros_like(e), m, 4, 1e-3, st)
    # the inner loss <y, e> decreased: a descent step
    assert float(((y1 - y0) * e).sum().detach()) < 0


def test_the_split_read_equals_the_materialised_one():
    from archlab.ops.cms import fast_mlp_read, fast_mlp_read_split
    m = meta()
    delta = {k: 0.1 * torch.randn(B, *v.shape) for k, v in m.items()}
    n = torch.randn(B, 5, D)
    full = fast_mlp_read(n, {k: m[k] + delta[k] for k in m})
    split = fast_mlp_read_split(n, m, delta)
    for a, b in zip(full, split, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_mlp_read_split(n, m, None)[0], fast_mlp_read(n, expand(m))[0])


@pytest.mark.parametrize("length,block", [(12, 4), (11, 4), (5, 5), (7, 3)])
def test_the_blocked_read_equals_one_split_read_per_block(length, block):
    """Blocks read materialised weights meta + D_k; the gradient reaches the input and the meta weights alike."""
    from archlab.ops.cms import fast_mlp_read_blocked, fast_mlp_read_split
    m = {k: v.clone().requires_grad_() for k, v in meta().items()}
    blocks = -(-length // block)
    delta = {k: 0.1 * torch.randn(blocks, B, *v.shape) for k, v in m.items()}
    weights = {k: (m[k] + d).detach() for k, d in delta.items()}
    n = torch.randn(B, length, D, requires_grad=True)
    got, z = fast_mlp_read_blocked(n, m, weights, block, with_preactivation=True)
    want, zs = zip(*[fast_mlp_read_split(n[:, k * block:(k + 1) * block], m, {p: d[k] for p, d in delta.items()})[:2]
                     for k in range(blocks)], strict=True)
    want = torch.cat(want, 1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(z, torch.cat(zs, 1), atol=1e-6, rtol=1e-5)
    inputs = [n, *m.values()]
    seed = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad((got * seed).sum(), inputs), torch.autograd.grad((want * seed).sum(), inputs),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_mlp_read_blocked(n, m, None, block), fast_mlp_read_split(n, m, None)[0])
    with pytest.raises(ValueError, match="do not cover"):
        fast_mlp_read_blocked(n[:, :1], m, weights, block) if blocks > 1 else fast_mlp_read_blocked(
            torch.cat([n, n], 1), m, weights, block)


@pytest.mark.parametrize("with_delta", [False, True])
def test_the_fused_step_equals_delta_plus_scaled_gradients(with_delta):
    from archlab.ops.cms import fast_mlp_grads, fast_mlp_read, fast_mlp_step
    m = meta()
    delta = {k: 0.1 * torch.randn(B, *v.shape) for k, v in m.items()} if with_delta else None
    n, e = torch.randn(B, 5, D), torch.randn(B, 5, D, requires_grad=True)
    w = {k: m[k] + (delta[k] if with_delta else 0) for k in m}
    w = expand(w) if not with_delta else w
    _, z, h = fast_mlp_read(n, w)
    fused = fast_mlp_step(n, z, h, w["W2"], e, -0.3, delta)
    grads = fast_mlp_grads(n, z, h, w["W2"], e)
    for k, g in grads.items():
        torch.testing.assert_close(fused[k], (delta[k] if with_delta else 0) - 0.3 * g, atol=1e-6, rtol=1e-5)
    # the error keeps its graph through the fused step (a learned self-modifier trains through its writes)
    assert torch.autograd.grad(fused["W1"].sum(), e)[0].abs().sum() > 0
    if with_delta:  # written in place into given tensors (the replay's recording pass)
        out = {k: torch.empty(2, *v.shape)[1] for k, v in delta.items()}
        with torch.no_grad():
            got = fast_mlp_step(n, z, h, w["W2"], e, -0.3, delta, out=out)
        assert all(got[k] is out[k] for k in out)
        for k in out:
            torch.testing.assert_close(out[k], fused[k].detach())
