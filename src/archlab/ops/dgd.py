"""Delta Gradient Descent (Nested Learning) writes of a residual MLP memory ``M(x) = x + W1 sigma(W2 x)``.

Self-modifying Titans update every memory once per chunk from per-token gradients taken at the chunk-start
weights, applied token after token (t = 1..C of the chunk)::

    W1 <- alpha_t W1 - eta_t g1_t                              g1_t = e_t sigma(z_t)^T
    W2 <- W2 (alpha_t I - eta_t k_t k_t^T) - eta_t g2_t        g2_t = u_t k_t^T        (rank-1 preconditioner)
    W2 <- alpha_t W2 - eta_t g2_t                                                     (without it)

with ``z_t = W2 k_t``, ``e_t`` the error at the output and ``u_t = (W1^T e_t) * sigma'(z_t)``.
:func:`dgd_reference` is that loop; :func:`dgd_chunked` is the same without a token loop: the W1 (and
unpreconditioned W2) recursion is a decayed sum, and the preconditioned W2 recursion is a gated delta rule on
``S = W2^T`` (decay ``alpha_t``, strength ``eta_t / alpha_t``, value ``-alpha_t u_t``; ``archlab.ops.delta_rule``,
chunked WY form). Gradients flow through ``eta``, ``alpha`` and the initial weights (tested equal).
Shapes: W1 [B, D, H], W2 [B, H, D], k/e [B, C, D], u/s [B, C, H], eta/alpha [B, C].
"""

from __future__ import annotations

import torch

from archlab.ops.delta_rule import delta_rule_chunk

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


def _decayed_sum(W, x, y, eta, alpha):
    """alpha_C..alpha_1 W - sum_t eta_t (prod_{s>t} alpha_s) x_t y_t^T, without a token loop."""
    log_a = torch.log(alpha)
    after = torch.exp(log_a.sum(1, keepdim=True) - torch.cumsum(log_a, 1))   # prod_{s>t} alpha_s
    total = torch.exp(log_a.sum(1))[:, None, None]
    return total * W - torch.einsum("bt,bti,btj->bij", eta * after, x, y)


def dgd_chunked(W1, W2, k, u, e, s, eta, alpha, precond: bool = True):
    W1 = _decayed_sum(W1, e, s, eta, alpha)
    if not precond:
        return W1, _decayed_sum(W2, u, k, eta, alpha)
    # S = W2^T [B, 1, D, H]: S <- alpha S + (eta/alpha) k (-alpha u - alpha S^T k)^T, a gated delta rule
    kk = k[:, :, None]
    _, S = delta_rule_chunk(kk, kk, (-alpha[..., None] * u)[:, :, None], (eta / alpha)[:, :, None],
                            g_BTH=torch.log(alpha)[:, :, None], initial_state_BHKV=W2.transpose(1, 2)[:, None],
                            output_final_state=True, chunk_size=max(8, min(64, k.shape[1])))
    return W1, S[:, 0].transpose(1, 2)
