"""Shared input builders and comparison helpers for the ops tests (exposed as fixtures)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


def make_inputs(
    B: int = 2,
    T: int = 17,
    H: int = 2,
    K: int = 8,
    V: int = 6,
    *,
    n_h: int | None = None,
    dtype: torch.dtype = torch.float64,
    use_g: bool = False,
    use_h0: bool = False,
    beta_max: float = 1.0,
    seed: int = 0,
) -> dict[str, torch.Tensor | None]:
    """Random delta-rule (n_h None) or delta-product inputs; unit-norm keys, beta in (0, beta_max)."""
    gen = torch.Generator().manual_seed(seed)
    rows = (B, T, H) if n_h is None else (B, T, H, n_h)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    inputs = {
        "q": rnd(B, T, H, K),
        "k": F.normalize(rnd(*rows, K), dim=-1),
        "v": rnd(*rows, V),
        "beta": torch.rand(*rows, generator=gen, dtype=torch.float64) * beta_max,
        "g": -0.3 * torch.rand(B, T, H, generator=gen, dtype=torch.float64) if use_g else None,
        "initial_state": 0.5 * rnd(B, H, K, V) if use_h0 else None,
    }
    return {n: (None if x is None else x.to(dtype).requires_grad_()) for n, x in inputs.items()}


def run_with_grads(fn, inputs: dict, seed: int = 1, **kwargs) -> dict[str, torch.Tensor]:
    """Run ``fn`` with a final state, backprop a random projection of (o, S), return outputs and grads."""
    o, S = fn(
        inputs["q"],
        inputs["k"],
        inputs["v"],
        inputs["beta"],
        g=inputs["g"],
        initial_state=inputs["initial_state"],
        output_final_state=True,
        **kwargs,
    )
    gen = torch.Generator().manual_seed(seed)
    do = torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)
    dS = torch.randn(S.shape, generator=gen, dtype=torch.float64).to(S.dtype)
    leaves = {n: x for n, x in inputs.items() if x is not None}
    grads = torch.autograd.grad((o * do).sum() + (S * dS).sum(), list(leaves.values()))
    out = {"o": o.detach(), "S": S.detach()}
    out.update({f"d{n}": gr for n, gr in zip(leaves, grads, strict=True)})
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (with a floor so all-zero references compare absolutely)."""
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() if b.numel() else 0.0


def assert_all_close(got: dict, ref: dict, tol: float) -> None:
    """Every entry of ``ref`` must be present in ``got`` and within ``tol`` relative (max-norm) error."""
    assert got.keys() == ref.keys()
    errs = {n: rel_err(got[n], ref[n]) for n in ref}
    bad = {n: e for n, e in errs.items() if not e <= tol}
    assert not bad, f"relative errors above {tol:g}: {bad} (all: {errs})"


def assert_two_halves_equal_one_pass(op, inputs: dict, split: int, **kwargs) -> None:
    """``op`` on [0, split) then [split, T) with the carried state equals one pass (outputs and state)."""
    x = {n: (None if t is None else t.detach()) for n, t in inputs.items()}

    def part(sl, h0):
        g = None if x["g"] is None else x["g"][:, sl]
        return op(x["q"][:, sl], x["k"][:, sl], x["v"][:, sl], x["beta"][:, sl], g=g, initial_state=h0,
                  output_final_state=True, **kwargs)

    o_full, S_full = part(slice(None), x["initial_state"])
    o1, S1 = part(slice(0, split), x["initial_state"])
    o2, S2 = part(slice(split, None), S1)
    torch.testing.assert_close(torch.cat([o1, o2], dim=1), o_full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S2, S_full, rtol=1e-10, atol=1e-10)


@pytest.fixture
def helpers():
    """The module-level helpers, so test files need not import conftest."""

    class _H:
        make_inputs = staticmethod(make_inputs)
        run_with_grads = staticmethod(run_with_grads)
        rel_err = staticmethod(rel_err)
        assert_all_close = staticmethod(assert_all_close)
        assert_two_halves_equal_one_pass = staticmethod(assert_two_halves_equal_one_pass)

    return _H
