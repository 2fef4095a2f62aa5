"""delta_rule: chunk vs naive parity (outputs, state, all grads), an independent loop, state carry."""

from __future__ import annotations

import math

import pytest
import torch

from archlab.ops import delta_rule, has_fla
from archlab.ops._common import gelu_rownorm

# (T, chunk_size, use_g, use_h0, state_nonlinearity): odd lengths, every chunk size, both gates and
# initial states, without taking the full cross product.
PARITY_F64 = [
    (1, 16, False, False, None),
    (1, 64, True, True, None),
    (63, 16, True, True, None),
    (63, 64, False, True, None),
    (100, 32, True, False, None),
    (100, 64, True, True, None),
    (257, 16, False, True, None),
    (257, 32, True, True, None),
    (257, 64, False, False, None),
    (63, 16, True, True, "gelu_rownorm"),
    (100, 32, False, True, "gelu_rownorm"),
]
PARITY_F32 = [
    (63, 16, True, True, None),
    (100, 32, False, False, None),
    (257, 64, True, True, None),
    (100, 64, True, True, "gelu_rownorm"),
]


def _parity(helpers, T, C, use_g, use_h0, nonlin, dtype, tol):
    inputs = helpers.make_inputs(T=T, dtype=dtype, use_g=use_g, use_h0=use_h0, seed=T + C)
    kw = dict(chunk_size=C, state_nonlinearity=nonlin)
    ref = helpers.run_with_grads(delta_rule, inputs, impl="naive", **kw)
    got = helpers.run_with_grads(delta_rule, inputs, impl="chunk", **kw)
    assert set(ref) == {"o", "S", "dq", "dk", "dv", "dbeta"} | ({"dg"} if use_g else set()) | (
        {"dinitial_state"} if use_h0 else set()
    )
    helpers.assert_all_close(got, ref, tol)


@pytest.mark.parametrize("T,C,use_g,use_h0,nonlin", PARITY_F64)
def test_chunk_matches_naive_float64(helpers, T, C, use_g, use_h0, nonlin):
    _parity(helpers, T, C, use_g, use_h0, nonlin, torch.float64, 1e-9)


@pytest.mark.parametrize("T,C,use_g,use_h0,nonlin", PARITY_F32)
def test_chunk_matches_naive_float32(helpers, T, C, use_g, use_h0, nonlin):
    _parity(helpers, T, C, use_g, use_h0, nonlin, torch.float32, 2e-5)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _loop_reference(q, k, v, beta, g, h0, scale, chunk_size=None):
    """Paper form with M = S^T of shape [V, K]: M <- a M (I - b k k^T) + b v k^T, o = scale M q."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    o = torch.zeros(B, T, H, V, dtype=torch.float64)
    M_final = torch.zeros(B, H, V, K, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            M = torch.zeros(V, K, dtype=torch.float64) if h0 is None else h0[b, h].T.clone()
            for t in range(T):
                a = 1.0 if g is None else math.exp(g[b, t, h].item())
                kt, bt = k[b, t, h], beta[b, t, h].item()
                M = a * M @ (torch.eye(K, dtype=torch.float64) - bt * torch.outer(kt, kt))
                M = M + bt * torch.outer(v[b, t, h], kt)
                o[b, t, h] = scale * (M @ q[b, t, h])
                if chunk_size is not None and ((t + 1) % chunk_size == 0 or t == T - 1):
                    # Row-normalised over V for every key, i.e. over each column of M.
                    col_norm = M.norm(dim=0, keepdim=True)
                    M = 0.5 * M * _gelu_tanh(2.0 * M / col_norm)
            M_final[b, h] = M
    return o, M_final.transpose(-1, -2)


@pytest.mark.parametrize(
    "use_g,use_h0,nonlin_chunk", [(False, False, None), (True, True, None), (True, True, 5)]
)
def test_naive_matches_explicit_loop(helpers, use_g, use_h0, nonlin_chunk):
    inputs = {
        n: (None if x is None else x.detach())
        for n, x in helpers.make_inputs(B=2, T=13, H=2, K=5, V=4, use_g=use_g, use_h0=use_h0, seed=3).items()
    }
    scale = 0.7
    o_ref, S_ref = _loop_reference(
        inputs["q"],
        inputs["k"],
        inputs["v"],
        inputs["beta"],
        inputs["g"],
        inputs["initial_state"],
        scale,
        nonlin_chunk,
    )
    o, S = delta_rule(
        inputs["q"],
        inputs["k"],
        inputs["v"],
        inputs["beta"],
        g=inputs["g"],
        scale=scale,
        initial_state=inputs["initial_state"],
        output_final_state=True,
        impl="naive",
        chunk_size=nonlin_chunk or 64,
        state_nonlinearity="gelu_rownorm" if nonlin_chunk else None,
    )
    torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S, S_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "use_g,nonlin,split", [(False, None, 37), (True, None, 50), (True, "gelu_rownorm", 64)]
)
def test_two_halves_equal_one_pass(helpers, use_g, nonlin, split):
    inputs = helpers.make_inputs(T=100, use_g=use_g, use_h0=True, seed=7)
    helpers.assert_two_halves_equal_one_pass(delta_rule, inputs, split, impl="chunk", chunk_size=32,
                                             state_nonlinearity=nonlin)


def test_chunk_size_is_free_without_nonlinearity_and_part_of_model_with_it(helpers):
    x = {n: (None if t is None else t.detach()) for n, t in helpers.make_inputs(T=70, use_h0=True).items()}
    args = (x["q"], x["k"], x["v"], x["beta"])
    o16, _ = delta_rule(*args, initial_state=x["initial_state"], chunk_size=16, impl="chunk")
    o64, _ = delta_rule(*args, initial_state=x["initial_state"], chunk_size=64, impl="chunk")
    torch.testing.assert_close(o16, o64, rtol=1e-10, atol=1e-10)
    kw = dict(initial_state=x["initial_state"], impl="chunk", state_nonlinearity="gelu_rownorm")
    n16, _ = delta_rule(*args, chunk_size=16, **kw)
    n64, _ = delta_rule(*args, chunk_size=64, **kw)
    assert (n16 - n64).abs().max() > 1e-3
    torch.testing.assert_close(n16[:, :16], n64[:, :16], rtol=1e-10, atol=1e-10)


def test_gelu_rownorm_zero_rows_and_formula():
    x = torch.randn(1, 2, 3, 5, dtype=torch.float64)
    x[0, 1, 2] = 0.0
    x.requires_grad_()
    y = gelu_rownorm(x)
    assert torch.equal(y[0, 1, 2], torch.zeros(5, dtype=torch.float64))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    row = x[0, 0, 0].detach()
    expected = 0.5 * row * _gelu_tanh(2 * row / row.norm())
    torch.testing.assert_close(y[0, 0, 0].detach(), expected)


def test_auto_on_cpu_is_chunk_and_default_scale(helpers):
    x = {n: (None if t is None else t.detach()) for n, t in helpers.make_inputs(T=20).items()}
    args = (x["q"], x["k"], x["v"], x["beta"])
    o_auto, S_none = delta_rule(*args)
    assert S_none is None
    o_chunk, _ = delta_rule(*args, impl="chunk")
    o_scaled, _ = delta_rule(*args, impl="chunk", scale=x["q"].shape[-1] ** -0.5)
    assert torch.equal(o_auto, o_chunk) and torch.equal(o_chunk, o_scaled)


def test_empty_sequence(helpers):
    x = {n: (None if t is None else t.detach()) for n, t in helpers.make_inputs(T=0, use_h0=True).items()}
    for impl in ("naive", "chunk"):
        o, S = delta_rule(
            x["q"],
            x["k"],
            x["v"],
            x["beta"],
            initial_state=x["initial_state"],
            output_final_state=True,
            impl=impl,
        )
        assert o.shape == (2, 0, 2, 6)
        torch.testing.assert_close(S, x["initial_state"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_in_and_out(helpers, dtype):
    x = helpers.make_inputs(T=50, dtype=dtype, use_g=True, use_h0=True)
    o, S = delta_rule(
        x["q"],
        x["k"],
        x["v"],
        x["beta"],
        g=x["g"],
        initial_state=x["initial_state"],
        output_final_state=True,
        chunk_size=16,
    )
    assert o.dtype == dtype and S.dtype == dtype
    (o.float().sum() + S.float().sum()).backward()
    assert all(
        t.grad is not None and t.grad.dtype == dtype and torch.isfinite(t.grad).all() for t in x.values()
    )
    x64 = {n: t.detach().double() for n, t in x.items()}
    o_ref, _ = delta_rule(
        x64["q"],
        x64["k"],
        x64["v"],
        x64["beta"],
        g=x64["g"],
        initial_state=x64["initial_state"],
        impl="naive",
    )
    assert (o.double() - o_ref).abs().max() / o_ref.abs().max() < 2e-2


def _bad(x, **over):
    args = {**x, **over}
    return lambda: delta_rule(
        args["q"],
        args["k"],
        args["v"],
        args["beta"],
        g=args["g"],
        initial_state=args["initial_state"],
        impl=args.get("impl", "auto"),
        chunk_size=args.get("chunk_size", 64),
        state_nonlinearity=args.get("state_nonlinearity"),
    )


@pytest.mark.parametrize(
    "name,bad",
    [
        ("q", torch.zeros(2, 5, 2)),
        ("k", torch.zeros(2, 5, 2, 7)),
        ("v", torch.zeros(2, 4, 2, 6)),
        ("beta", torch.zeros(2, 5, 2, 1)),
        ("g", torch.zeros(2, 5)),
        ("initial_state", torch.zeros(2, 2, 6, 8)),
    ],
)
def test_bad_shapes_name_the_argument(helpers, name, bad):
    x = {n: (None if t is None else t.detach().float()) for n, t in helpers.make_inputs(T=5).items()}
    with pytest.raises(ValueError, match=rf"^{name} "):
        _bad(x, **{name: bad})()


@pytest.mark.parametrize(
    "option,value,pattern",
    [
        ("impl", "triton", r"impl must be one of \('auto', 'naive', 'chunk', 'fla'\)"),
        ("chunk_size", 0, "chunk_size"),
        ("state_nonlinearity", "relu", "state_nonlinearity"),
    ],
)
def test_bad_options(helpers, option, value, pattern):
    x = {n: (None if t is None else t.detach()) for n, t in helpers.make_inputs(T=5).items()}
    with pytest.raises(ValueError, match=pattern):
        _bad(x, **{option: value})()


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and has_fla()), reason="needs CUDA and fla")
def test_fla_matches_chunk_on_cuda(helpers):
    x = {
        n: t.detach().cuda().bfloat16()
        for n, t in helpers.make_inputs(B=2, T=300, H=4, K=64, V=64, use_g=True, use_h0=True).items()
    }
    for g in (None, x["g"]):
        kw = dict(g=g, initial_state=x["initial_state"].float(), output_final_state=True)
        o_fla, S_fla = delta_rule(x["q"], x["k"], x["v"], x["beta"], impl="fla", **kw)
        o_ref, S_ref = delta_rule(x["q"], x["k"], x["v"], x["beta"], impl="chunk", **kw)
        assert (o_fla.float() - o_ref.float()).norm() / o_ref.float().norm() < 1e-2
        assert (S_fla.float() - S_ref.float()).norm() / S_ref.float().norm() < 1e-2


@pytest.mark.parametrize("use_g", [False, True])
def test_chunk_blocks_of_chunks_match_naive(helpers, monkeypatch, use_g):
    """The fused form runs its per-chunk work over blocks of chunks: uneven blocks change nothing."""
    from archlab.ops.delta_rule import fused

    # 3 chunk rows per block: B*H*N = 2*2*5 = 20 rows -> 7 blocks, the last one short
    monkeypatch.setattr(fused, "_BLOCK_BYTES", 3 * 16 * (8 + 6) * 8)
    assert len(fused._blocks(20, 16, 8 + 6, 8)) == 7
    inputs = helpers.make_inputs(T=77, dtype=torch.float64, use_g=use_g, use_h0=True, seed=11)
    ref = helpers.run_with_grads(delta_rule, inputs, impl="naive", chunk_size=16)
    got = helpers.run_with_grads(delta_rule, inputs, impl="chunk", chunk_size=16)
    helpers.assert_all_close(got, ref, 1e-9)


def test_large_decay_stays_finite(helpers):
    """A strong decay (exp(G) underflows within a chunk) must not produce inf/nan in outputs or grads."""
    inputs = helpers.make_inputs(T=64, dtype=torch.float32, use_g=True, use_h0=True, seed=5)
    inputs["g"] = torch.full_like(inputs["g"], -30.0).requires_grad_()
    got = helpers.run_with_grads(delta_rule, inputs, impl="chunk", chunk_size=32)
    ref = helpers.run_with_grads(delta_rule, inputs, impl="naive", chunk_size=32)
    assert all(torch.isfinite(t).all() for t in got.values())
    # dg is ~1e-13 here (the decay wipes the state), so it is compared in absolute terms
    assert (got.pop("dg") - ref.pop("dg")).abs().max() < 1e-6
    helpers.assert_all_close(got, ref, 1e-4)


@pytest.mark.parametrize(
    "T,C,m,use_g,use_h0,nonlin",
    [(77, 16, 3, True, True, None), (64, 32, 2, False, True, None), (5, 16, 3, True, False, None),
     (40, 16, 2, True, True, "gelu_rownorm")],
)
def test_grouped_queries_equal_repeated_states(helpers, monkeypatch, T, C, m, use_g, use_h0, nonlin):
    """q with m times the heads of k: same outputs, final state and grads as repeating k/v/beta/g/state m times."""
    from archlab.ops.delta_rule import fused

    monkeypatch.setattr(fused, "_BLOCK_BYTES", 3 * C * (8 + 6) * 8)  # several blocks of chunk rows
    x = helpers.make_inputs(B=2, T=T, H=2, use_g=use_g, use_h0=use_h0, seed=T + m)
    x["q"] = torch.randn(2, T, 2 * m, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(m))
    x["q"].requires_grad_()
    got = helpers.run_with_grads(delta_rule, x, impl="chunk", chunk_size=C, state_nonlinearity=nonlin)

    def repeated(q, k, v, beta, *, g, initial_state, **kw):
        k, v, beta = (z.repeat_interleave(m, dim=2) for z in (k, v, beta))
        g = None if g is None else g.repeat_interleave(m, dim=2)
        h0 = None if initial_state is None else initial_state.repeat_interleave(m, dim=1)
        o, S = delta_rule(q, k, v, beta, g=g, initial_state=h0, impl="naive", **kw)
        assert torch.equal(S[:, ::m], S[:, m - 1 :: m])  # the copies of a state agree
        return o, S[:, ::m]

    ref = helpers.run_with_grads(repeated, x, chunk_size=C, state_nonlinearity=nonlin)
    helpers.assert_all_close(got, ref, 1e-9)


def test_query_heads_must_be_a_multiple_of_key_heads(helpers):
    x = {n: (None if t is None else t.detach()) for n, t in helpers.make_inputs(T=5, H=2).items()}
    with pytest.raises(ValueError, match="k must have shape"):
        _bad(x, q=torch.randn(2, 5, 3, 8, dtype=torch.float64))()
