"""Inner optimiser of the fast MLP memories (``archlab.ops.cms``): deep momentum with a rank-1 preconditioner.

At a write (the period boundary) with the period's summed gradients ``g`` and inputs ``n_t``::

    g'_W1 = g_W1 (I - u u^T),   u = sum_t n_t / ||sum_t n_t||     (the unit mean context of the period)
    m     <- beta m + (1 - beta) g'                                (every parameter; g' = g for b1, W2, b2)
    W     <- W - lr m

The projection is the seed's "nl_l2_precond" (Nested Learning's DGD read as a rank-1 preconditioner: the step
leaves the weights' response to the current mean input alone, so a write does not simply scale what the memory
returns for the context it was written from); as there, it acts on the input-side weight only (the tensor
whose last dim is the model dim). The momentum is the seed's ``deep_momentum`` EMA of the preconditioned
gradient. ``beta = 0`` without the projection is the plain step ``W <- W - lr g``.

:func:`inner_update` is the batched form; :func:`inner_update_reference` builds the projector ``I - u u^T`` as a
matrix (one context at a time); ``tests/ops/test_inner_optim.py`` holds them, and the token-by-token fast MLP,
equal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["inner_update", "inner_update_reference"]


def inner_update(g: dict[str, torch.Tensor], n_sum: torch.Tensor, momentum: dict[str, torch.Tensor] | None,
                 beta: float, precond: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """``(m, new momentum)`` for summed gradients ``g`` (batch-first) and the period's input sum ``n_sum [B, D]``.

    The step to subtract (times lr) is ``m``; the momentum is None when ``beta == 0`` (nothing to carry).
    """
    if precond:
        u = F.normalize(n_sum.to(g["W1"].dtype), dim=-1)                  # [B, D]; zero input: no projection
        g = dict(g, W1=g["W1"] - torch.bmm(g["W1"], u[..., None]) * u[:, None, :])
    if not beta:
        return g, None
    m = {k: (1 - beta) * v + beta * momentum[k] if momentum is not None else (1 - beta) * v for k, v in g.items()}
    return m, m


def inner_update_reference(g, n_sum, momentum, beta: float, precond: bool):
    """:func:`inner_update` one context at a time with the projector as an explicit matrix."""
    out = {k: [] for k in g}
    for b in range(n_sum.shape[0]):
        for k, v in g.items():
            step = v[b]
            if precond and k == "W1":
                norm = n_sum[b].norm()
                u = n_sum[b] / norm if norm > 0 else torch.zeros_like(n_sum[b])
                step = step @ (torch.eye(u.shape[0], dtype=step.dtype) - torch.outer(u, u))
            if beta:
                prev = momentum[k][b] if momentum is not None else torch.zeros_like(step)
                step = beta * prev + (1 - beta) * step
            out[k].append(step)
    m = {k: torch.stack(v) for k, v in out.items()}
    return m, (m if beta else None)
