"""gated_ema (IntegralLNN's scan): chunk == naive (outputs, final state, every gradient) at odd lengths, an
independent scalar loop, carried state, and dilated attention's gather == its dense masked reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archlab.ops import dilated_attention, dilated_offsets, gated_ema
from archlab.ops.dilated_attention import dilated_attention_dense, dilated_attention_step


def _inputs(B=2, T=37, D=5, per_token=True, h0=True, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(B, T, D, generator=gen, dtype=torch.float64)
    # strong and weak decays (lambda from ~1e-4 to ~0.999): the chunked form must not overflow
    w = torch.randn(B, T, D, generator=gen, dtype=torch.float64) * 4 if per_token else \
        torch.linspace(-9, 7, D, dtype=torch.float64)
    h = torch.randn(B, D, generator=gen, dtype=torch.float64) if h0 else None
    return {n: (None if x is None else x.to(dtype).requires_grad_()) for n, x in dict(v=v, w=w, h0=h).items()}


def _run(x, impl, chunk_size=32):
    o, S = gated_ema(x["v"], F.logsigmoid(x["w"]), initial_state=x["h0"], output_final_state=True, impl=impl,
                     chunk_size=chunk_size)
    gen = torch.Generator().manual_seed(1)
    do, dS = torch.randn(o.shape, generator=gen, dtype=o.dtype), torch.randn(S.shape, generator=gen, dtype=S.dtype)
    leaves = {n: t for n, t in x.items() if t is not None}
    grads = torch.autograd.grad((o * do).sum() + (S * dS).sum(), list(leaves.values()))
    return {"o": o.detach(), "S": S.detach(), **{f"d{n}": g for n, g in zip(leaves, grads, strict=True)}}


@pytest.mark.parametrize("T,C,per_token,h0", [(1, 16, True, True), (37, 16, True, True), (37, 8, False, False),
                                              (64, 32, True, False), (101, 32, False, True), (5, 64, True, True)])
def test_chunk_matches_naive_outputs_state_and_gradients(T, C, per_token, h0):
    x = _inputs(T=T, per_token=per_token, h0=h0, seed=T + C)
    ref, got = _run(x, "naive"), _run(x, "chunk", C)
    assert set(ref) == {"o", "S", "dv", "dw"} | ({"dh0"} if h0 else set())
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-10, atol=1e-10, msg=name)


def test_chunk_matches_naive_in_float32():
    x = _inputs(T=77, dtype=torch.float32, seed=3)
    ref, got = _run(x, "naive"), _run(x, "chunk", 16)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-5, msg=name)


def test_matches_an_independent_scalar_loop():
    x = _inputs(B=1, T=9, D=2, seed=5)
    lam = torch.sigmoid(x["w"]).detach()
    o, _ = gated_ema(x["v"].detach(), torch.log(lam), initial_state=x["h0"].detach(), chunk_size=4)
    for d in range(2):
        h = x["h0"][0, d].item()
        for t in range(9):
            h = lam[0, t, d].item() * h + x["v"][0, t, d].item()
            assert abs(o[0, t, d].item() - h) < 1e-12


@pytest.mark.parametrize("split", [1, 13, 36])
def test_two_halves_with_carried_state_equal_one_pass(split):
    x = {n: t.detach() for n, t in _inputs(T=37, seed=9).items()}
    a = F.logsigmoid(x["w"])
    full, S = gated_ema(x["v"], a, initial_state=x["h0"], output_final_state=True, chunk_size=8)
    o1, S1 = gated_ema(x["v"][:, :split], a[:, :split], initial_state=x["h0"], output_final_state=True, chunk_size=8)
    o2, S2 = gated_ema(x["v"][:, split:], a[:, split:], initial_state=S1, output_final_state=True, chunk_size=8)
    torch.testing.assert_close(torch.cat([o1, o2], 1), full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(S2, S, rtol=1e-12, atol=1e-12)


def test_per_channel_decay_broadcasts_and_bad_shapes_are_named():
    v = torch.randn(2, 6, 3)
    a = F.logsigmoid(torch.randn(3))
    torch.testing.assert_close(gated_ema(v, a)[0], gated_ema(v, a.expand(2, 6, 3), impl="naive")[0])
    with pytest.raises(ValueError, match="log_decay"):
        gated_ema(v, torch.zeros(4))
    with pytest.raises(ValueError, match="initial_state"):
        gated_ema(v, a, initial_state=torch.zeros(3))
    with pytest.raises(ValueError, match="chunk_size"):
        gated_ema(v, a, chunk_size=0)


# ------------------------------------------------------------------------------------------ dilated attention
def test_offsets_are_powers_of_two_below_the_length():
    assert dilated_offsets(1) == [0]
    assert dilated_offsets(2) == [0, 1]
    assert dilated_offsets(20) == [0, 1, 2, 4, 8, 16]
    assert dilated_offsets(20, max_offset=5) == [0, 1, 2, 4]


@pytest.mark.parametrize("T", [1, 2, 7, 33])
def test_gathered_dilated_attention_equals_the_dense_masked_reference(T):
    gen = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(2, T, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    outs = [fn(q, k, v) for fn in (dilated_attention, dilated_attention_dense)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    w = torch.randn(outs[0].shape, generator=gen, dtype=torch.float64)
    g0, g1 = (torch.autograd.grad((o * w).sum(), (q, k, v)) for o in outs)
    for a, b in zip(g0, g1, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_dilated_attention_reads_only_its_offsets():
    """Query i's output depends on key j only when i - j is one of the offsets (so it is causal)."""
    T = 12
    q, k, v = (torch.randn(1, T, 1, 4, dtype=torch.float64) for _ in range(3))
    base = dilated_attention(q, k, v)
    for j in range(T):
        k2, v2 = k.clone(), v.clone()
        k2[:, j] += 1.0
        v2[:, j] += 1.0
        changed = (dilated_attention(q, k2, v2) - base).abs().amax(dim=(0, 2, 3)) > 0
        expected = torch.tensor([(i - j) in dilated_offsets(T) for i in range(T)])
        assert torch.equal(changed, expected), j


@pytest.mark.parametrize("max_offset", [None, 3])
def test_one_query_step_per_row_equals_that_row_of_the_full_attention(max_offset):
    """Decoding: row b's query at its own position reads the cached keys as the full pass's query there does."""
    B, T, H, K = 3, 13, 2, 4
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(B, T, H, K, generator=gen, dtype=torch.float64) for _ in range(3))
    full = dilated_attention(q, k, v, offsets=dilated_offsets(T, max_offset))
    pos = torch.tensor([0, 6, 12])  # rows at different positions; keys after a row's position are never read
    junk_k, junk_v = k.clone(), v.clone()
    for b, p in enumerate(pos.tolist()):
        junk_k[b, p + 1 :], junk_v[b, p + 1 :] = 1e3, -1e3
    out = dilated_attention_step(q[torch.arange(B), pos], junk_k, junk_v, pos,
                                 offsets=dilated_offsets(int(pos.max()) + 1, max_offset))
    torch.testing.assert_close(out, full[torch.arange(B), pos], rtol=1e-12, atol=1e-12)
