"""delta_product: chunk vs naive parity (outputs, state, all grads), loop check, n_h=1 == delta_rule."""

from __future__ import annotations

import math

import pytest
import torch

from archlab.ops import delta_product, delta_rule, has_fla

# (T, chunk_size in real tokens, n_h, use_g, use_h0, state_nonlinearity); beta in (0, 2) throughout.
PARITY_F64 = [
    (1, 16, 2, True, True, None),
    (63, 16, 3, True, True, None),
    (63, 32, 1, False, True, None),
    (100, 32, 2, False, False, None),
    (100, 64, 3, True, False, None),
    (257, 16, 2, True, True, None),
    (257, 64, 2, False, True, None),
    (100, 16, 2, True, True, "gelu_rownorm"),
]
PARITY_F32 = [
    (63, 16, 3, True, True, None),
    (257, 32, 2, True, True, None),
    (100, 32, 2, False, True, "gelu_rownorm"),
]


def _parity(helpers, T, C, n_h, use_g, use_h0, nonlin, dtype, tol):
    inputs = helpers.make_inputs(
        T=T, n_h=n_h, dtype=dtype, use_g=use_g, use_h0=use_h0, beta_max=2.0, seed=T + n_h
    )
    kw = dict(chunk_size=C, state_nonlinearity=nonlin)
    ref = helpers.run_with_grads(delta_product, inputs, impl="naive", **kw)
    got = helpers.run_with_grads(delta_product, inputs, impl="chunk", **kw)
    assert {"dq", "dk", "dv", "dbeta"} <= set(ref) and ("dg" in ref) == use_g
    helpers.assert_all_close(got, ref, tol)


@pytest.mark.parametrize("T,C,n_h,use_g,use_h0,nonlin", PARITY_F64)
def test_chunk_matches_naive_float64(helpers, T, C, n_h, use_g, use_h0, nonlin):
    _parity(helpers, T, C, n_h, use_g, use_h0, nonlin, torch.float64, 1e-9)


@pytest.mark.parametrize("T,C,n_h,use_g,use_h0,nonlin", PARITY_F32)
def test_chunk_matches_naive_float32(helpers, T, C, n_h, use_g, use_h0, nonlin):
    _parity(helpers, T, C, n_h, use_g, use_h0, nonlin, torch.float32, 2e-5)


@pytest.mark.parametrize("use_g", [False, True])
def test_naive_matches_householder_product_loop(helpers, use_g):
    """Explicit transition matrices: M <- M a prod_j (I - b_j k_j k_j^T) applied step by step."""
    x = {
        n: (None if t is None else t.detach())
        for n, t in helpers.make_inputs(
            B=1, T=9, H=2, K=5, V=3, n_h=3, use_g=use_g, use_h0=True, beta_max=2.0, seed=11
        ).items()
    }
    B, T, H, N, K = x["k"].shape
    V = x["v"].shape[-1]
    scale = K**-0.5
    o_ref = torch.zeros(B, T, H, V, dtype=torch.float64)
    for h in range(H):
        M = x["initial_state"][0, h].T.clone()
        for t in range(T):
            if use_g:
                M = math.exp(x["g"][0, t, h].item()) * M
            for j in range(N):
                kv, b = x["k"][0, t, h, j], x["beta"][0, t, h, j].item()
                M = M @ (torch.eye(K, dtype=torch.float64) - b * torch.outer(kv, kv)) + b * torch.outer(
                    x["v"][0, t, h, j], kv
                )
            o_ref[0, t, h] = scale * M @ x["q"][0, t, h]
        S_ref_h = M.T
        _, S = delta_product(
            x["q"],
            x["k"],
            x["v"],
            x["beta"],
            g=x["g"],
            initial_state=x["initial_state"],
            output_final_state=True,
            impl="naive",
        )
        torch.testing.assert_close(S[0, h], S_ref_h, rtol=1e-12, atol=1e-12)
    o, _ = delta_product(
        x["q"], x["k"], x["v"], x["beta"], g=x["g"], initial_state=x["initial_state"], impl="naive"
    )
    torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["naive", "chunk"])
@pytest.mark.parametrize("use_g", [False, True])
def test_single_step_equals_delta_rule(helpers, impl, use_g):
    x = {
        n: (None if t is None else t.detach())
        for n, t in helpers.make_inputs(T=45, use_g=use_g, use_h0=True, seed=5).items()
    }
    kw = dict(g=x["g"], initial_state=x["initial_state"], output_final_state=True, impl=impl, chunk_size=16)
    o_r, S_r = delta_rule(x["q"], x["k"], x["v"], x["beta"], **kw)
    o_p, S_p = delta_product(x["q"], x["k"][:, :, :, None], x["v"][:, :, :, None], x["beta"][..., None], **kw)
    torch.testing.assert_close(o_p, o_r, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(S_p, S_r, rtol=1e-11, atol=1e-11)


def test_repeated_step_equals_delta_rule_on_repeated_tokens(helpers):
    """n_h = 2 with identical sub-steps and a zero query in between = delta rule on doubled tokens."""
    x = {n: (None if t is None else t.detach()) for n, t in helpers.make_inputs(T=30, n_h=2, seed=9).items()}
    o_p, S_p = delta_product(x["q"], x["k"], x["v"], x["beta"], output_final_state=True, chunk_size=8)
    B, T, H, N, K = x["k"].shape
    q_virtual = torch.zeros_like(x["k"])
    q_virtual[:, :, :, -1] = x["q"]

    def flat(t):
        return t.transpose(2, 3).reshape(B, T * N, H, *t.shape[4:])

    o_r, S_r = delta_rule(
        flat(q_virtual), flat(x["k"]), flat(x["v"]), flat(x["beta"]), output_final_state=True
    )
    torch.testing.assert_close(o_p, o_r.reshape(B, T, N, H, -1)[:, :, -1], rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(S_p, S_r, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("use_g,nonlin,split", [(True, None, 41), (False, "gelu_rownorm", 48)])
def test_two_halves_equal_one_pass(helpers, use_g, nonlin, split):
    inputs = helpers.make_inputs(T=90, n_h=2, use_g=use_g, use_h0=True, beta_max=2.0, seed=4)
    helpers.assert_two_halves_equal_one_pass(delta_product, inputs, split, impl="chunk", chunk_size=16,
                                             state_nonlinearity=nonlin)


def test_bfloat16_in_and_out(helpers):
    x = helpers.make_inputs(T=40, n_h=2, dtype=torch.bfloat16, use_g=True, use_h0=True, beta_max=2.0)
    o, S = delta_product(
        x["q"], x["k"], x["v"], x["beta"], g=x["g"], initial_state=x["initial_state"], output_final_state=True
    )
    assert o.dtype == torch.bfloat16 and S.dtype == torch.bfloat16 and o.shape == (2, 40, 2, 6)
    (o.float().sum() + S.float().sum()).backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in x.values())


@pytest.mark.parametrize(
    "name,bad",
    [
        ("q", torch.zeros(2, 5, 2, 8, 1)),
        ("k", torch.zeros(2, 5, 2, 8)),
        ("v", torch.zeros(2, 5, 2, 3, 6)),
        ("beta", torch.zeros(2, 5, 2)),
        ("g", torch.zeros(2, 5, 2, 2)),
        ("initial_state", torch.zeros(2, 2, 8)),
    ],
)
def test_bad_shapes_name_the_argument(helpers, name, bad):
    x = {n: (None if t is None else t.detach().float()) for n, t in helpers.make_inputs(T=5, n_h=2).items()}
    x[name] = bad
    with pytest.raises(ValueError, match=rf"^{name} "):
        delta_product(x["q"], x["k"], x["v"], x["beta"], g=x["g"], initial_state=x["initial_state"])


def test_unknown_impl(helpers):
    x = {n: (None if t is None else t.detach()) for n, t in helpers.make_inputs(T=5, n_h=2).items()}
    with pytest.raises(ValueError, match="impl must be one of"):
        delta_product(x["q"], x["k"], x["v"], x["beta"], impl="recurrent")


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and has_fla()), reason="needs CUDA and fla")
def test_fla_matches_chunk_on_cuda(helpers):
    x = {
        n: t.detach().cuda().bfloat16()
        for n, t in helpers.make_inputs(
            B=2, T=200, H=4, K=64, V=64, n_h=2, use_g=True, use_h0=True, beta_max=2.0
        ).items()
    }
    kw = dict(g=x["g"], initial_state=x["initial_state"].float(), output_final_state=True)
    o_fla, S_fla = delta_product(x["q"], x["k"], x["v"], x["beta"], impl="fla", **kw)
    o_ref, S_ref = delta_product(x["q"], x["k"], x["v"], x["beta"], impl="chunk", **kw)
    assert (o_fla.float() - o_ref.float()).norm() / o_ref.float().norm() < 1e-2
    assert (S_fla.float() - S_ref.float()).norm() / S_ref.float().norm() < 1e-2
