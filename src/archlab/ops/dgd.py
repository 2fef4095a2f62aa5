"""Delta Gradient Descent (Nested Learning) writes of a residual MLP memory ``M(x) = x + W1 sigma(W2 x)``.

Self-modifying Titans update every memory once per chunk from per-token gradients taken at the chunk-start
weights, applied token after token (t = 1..C of the chunk)::

    W1 <- alpha_t W1 - eta_t g1_t                              g1_t = e_t sigma(z_t)^T
    W2 <- W2 (alpha_t I - eta_t k_t k_t^T) - eta_t g2_t        g2_t = u_t k_t^T        (rank-1 preconditioner)
    W2 <- alpha_t W2 - eta_t g2_t                                                     (without it)

with ``z_t = W2 k_t``, ``e_t`` the error at the output and ``u_t = (W1^T e_t) * sigma'(z_t)``.
:func:`dgd_reference` is that loop; :func:`dgd_chunked` is the same without a token loop: the W1 (and
unpreconditioned W2) recursion is a decayed sum, and the preconditioned W2 recursion is a delta rule whose
per-token writes solve one unit lower-triangular ``C x C`` system (:func:`_preconditioned_w2`; ``O(C D H)``, where
the chunked delta-rule kernel's ``D x D`` transition matrix costs ``O(D^2 H)``: 9x the FLOPs at C = 8, D = 128).
Gradients flow through every input (tested equal).
Shapes: W1 [B, D, H], W2 [B, H, D], k/e [B, C, D], u/s [B, C, H], eta/alpha [B, C].
"""

from __future__ import annotations

import torch

__all__ = ["dgd_chunked", "dgd_reference"]


def dgd_reference(W1, W2, k, u, e, s, eta, alpha, precond: bool = True):
    eye = torch.eye(W2.shape[-1], dtype=W2.dtype, device=W2.device)
    for t in range(k.shape[1]):
        a, n = alpha[:, t, None, None], eta[:, t, None, None]
        g1 = e[:, t, :, None] * s[:, t, None, :]
        g2 = u[:, t, :, None] * k[:, t, None, :]
        W1 = a * W1 - n * g1
        if precond:
            kk = k[:, t, :, None] * k[:, t, None, :]
            W2 = W2 @ (a * eye - n * kk) - n * g2
        else:
            W2 = a * W2 - n * g2
    return W1, W2


def _decayed_sum(W, x, y, eta, total):
    """alpha_C..alpha_1 W - sum_t eta_t (prod_{s>t} alpha_s) x_t y_t^T, without a token loop (``total``: the
    cumulative sum of log alpha)."""
    after = torch.exp(total[:, -1:] - total)   # prod_{s>t} alpha_s
    # one baddbmm: einsum's three-operand contraction dispatches ~24 ops forward, more backward
    return torch.baddbmm(total[:, -1].exp()[:, None, None] * W, (x * (eta * after)[..., None]).transpose(1, 2), y,
                         alpha=-1)


def _preconditioned_w2(W2, k, u, eta, log_a, total):
    """The preconditioned W2 recursion over one chunk in closed form, ``O(C D H)`` (no ``D x D`` transition matrix).

    With ``w_t = -eta_t (S_{t-1} k_t + u_t)`` (S = W2) each step is ``S_t = alpha_t S_{t-1} + w_t k_t^T``, so
    ``S_{t-1} k_t`` is the start weights' ``S_0 k_t`` decayed plus earlier ``w_r`` weighted by ``k_r . k_t``: the
    ``w`` solve a unit lower-triangular ``C x C`` system, and the end weights are one GEMM with them.
    """
    before = total - log_a                           # log prod_{s<t} alpha_s
    later = torch.ones(k.shape[1], k.shape[1], dtype=torch.bool, device=k.device).triu()  # r >= t: not earlier
    decay = (before[:, :, None] - total[:, None, :]).masked_fill(later, float("-inf")).exp()  # prod_{r<s<t} alpha_s
    coupling = eta[..., None] * decay * torch.bmm(k, k.transpose(1, 2))  # strictly lower; the diagonal is 1
    start = torch.bmm(k, W2.transpose(1, 2))         # S_0 k_t, [B, C, H]
    w = torch.linalg.solve_triangular(coupling, -eta[..., None] * (before.exp()[..., None] * start + u), upper=False,
                                      unitriangular=True)
    after = (total[:, -1:] - total).exp()            # prod_{s>t} alpha_s
    return torch.baddbmm(total[:, -1].exp()[:, None, None] * W2, (w * after[..., None]).transpose(1, 2), k)


def dgd_chunked(W1, W2, k, u, e, s, eta, alpha, precond: bool = True):
    log_a = torch.log(alpha)
    total = torch.cumsum(log_a, 1)                   # log prod_{s<=t} alpha_s
    W1 = _decayed_sum(W1, e, s, eta, total)
    if not precond:
        return W1, _decayed_sum(W2, u, k, eta, total)
    return W1, _preconditioned_w2(W2, k, u, eta, log_a, total)
