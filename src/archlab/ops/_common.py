"""Shared helpers for the delta-rule family of ops: validation, dtype policy, padding, state maps.

Legend: B batch, T tokens, H heads, K key dim, V value dim, N householder steps per token (n_h).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

IMPLS = ("auto", "naive", "chunk", "fla")
STATE_NONLINEARITIES = (None, "gelu_rownorm")

# Added under the square root of the row norm so that all-zero state rows (e.g. a fresh state) map to
# zero with finite gradients.
_ROWNORM_EPS = 1e-12


def check_impl(impl: str) -> None:
    """Raise ValueError for an unknown ``impl`` string, naming the valid choices."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def check_options(*, chunk_size: int, scale: float | None, state_nonlinearity: str | None) -> None:
    """Validate the scalar keyword options shared by every entry point."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"scale must be a finite float or None, got {scale!r}")
    if state_nonlinearity not in STATE_NONLINEARITIES:
        raise ValueError(
            f"state_nonlinearity must be one of {STATE_NONLINEARITIES}, got {state_nonlinearity!r}"
        )


def _expect(name: str, x: torch.Tensor | None, shape: tuple[int, ...], layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {layout} = {tuple(shape)}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")


def validate_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    *,
    product: bool,
) -> None:
    """Check shapes of the delta rule (``product=False``) or delta product (``product=True``) inputs.

    Raises:
        ValueError: naming the first argument whose shape, type or dtype is wrong.
    """
    if not isinstance(q, torch.Tensor) or q.ndim != 4:
        got = tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
        raise ValueError(f"q must be a 4-d tensor [B, T, H, K], got {got}")
    B, T, H, K = q.shape
    _expect("q", q, (B, T, H, K), "[B, T, H, K]")
    if not product:
        # grouped queries: q may have m times the heads of k (every m query heads read one state)
        if isinstance(k, torch.Tensor) and k.ndim == 4 and k.shape[2] > 0 and H % k.shape[2] == 0:
            H = k.shape[2]
        _expect("k", k, (B, T, H, K), "[B, T, H, K] (H dividing q's heads)")
        if not isinstance(v, torch.Tensor) or v.ndim != 4:
            raise ValueError(f"v must be a 4-d tensor [B, T, H, V], got {getattr(v, 'shape', type(v))}")
        V = v.shape[-1]
        _expect("v", v, (B, T, H, V), "[B, T, H, V]")
        _expect("beta", beta, (B, T, H), "[B, T, H]")
    else:
        if not isinstance(k, torch.Tensor) or k.ndim != 5:
            raise ValueError(f"k must be a 5-d tensor [B, T, H, n_h, K], got {getattr(k, 'shape', type(k))}")
        _expect("k", k, (B, T, H, k.shape[3], K), "[B, T, H, n_h, K]")
        if k.shape[3] < 1:
            raise ValueError("k must have n_h >= 1 householder steps (dim 3)")
        N = k.shape[3]
        if not isinstance(v, torch.Tensor) or v.ndim != 5:
            raise ValueError(f"v must be a 5-d tensor [B, T, H, n_h, V], got {getattr(v, 'shape', type(v))}")
        V = v.shape[-1]
        _expect("v", v, (B, T, H, N, V), "[B, T, H, n_h, V]")
        _expect("beta", beta, (B, T, H, N), "[B, T, H, n_h]")
    if g is not None:
        _expect("g", g, (B, T, H), "[B, T, H]")
    if initial_state is not None:
        _expect("initial_state", initial_state, (B, H, K, V), "[B, H, K, V]")
    devices = {x.device for x in (q, k, v, beta, g, initial_state) if x is not None}
    if len(devices) > 1:
        raise ValueError(f"q, k, v, beta, g and initial_state must be on one device, got {devices}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else (fp32, bf16, fp16) is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def gelu_rownorm(state_BHKV: torch.Tensor) -> torch.Tensor:
    """Row-normalised GELU gate ``x -> (x / 2) * GELU_tanh(2 x / ||x||_row)`` (TPTT "+non-linearity").

    The norm is taken over the value dim of every key row; rows that are exactly zero map to zero.

    Args:
        state_BHKV: state of shape [B, H, K, V].

    Returns:
        Tensor of the same shape and dtype.
    """
    norm_BHK1 = torch.sqrt(state_BHKV.square().sum(-1, keepdim=True) + _ROWNORM_EPS)
    return 0.5 * state_BHKV * F.gelu(2.0 * state_BHKV / norm_BHK1, approximate="tanh")


def state_map(state_nonlinearity: str | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Return the chunk-boundary state map for ``state_nonlinearity`` (None for the linear model)."""
    return gelu_rownorm if state_nonlinearity == "gelu_rownorm" else None


def pad_time(x: torch.Tensor, multiple: int, dim: int = 1) -> torch.Tensor:
    """Zero-pad ``x`` along ``dim`` up to the next multiple of ``multiple`` (no copy if already one)."""
    pad = (-x.shape[dim]) % multiple
    if pad == 0:
        return x
    shape = list(x.shape)
    shape[dim] = pad
    return torch.cat([x, x.new_zeros(shape)], dim=dim)
