"""M3, multi-scale momentum Muon (Nested Learning, seed 003), for 2-D weight matrices.

Per step, with gradient g::

    M1 <- beta1 M1 + g                          fast momentum, every step
    A  <- A + g                                 gradients since the last slow update
    every ``slow_every`` steps: M2 <- slow_beta M2 + A; A <- 0      slow momentum
    V  <- beta2 V + (1 - beta2) g^2             Adam-style second moment (bias-corrected)
    W  <- (1 - lr wd) W - lr * (NS(M1) + slow_weight NS(M2)) / (sqrt(V_hat) + eps) * scale

NS is the quintic Newton-Schulz orthogonalisation of Muon (5 steps, Keller Jordan's coefficients); ``scale``
is Muon's shape factor ``max(1, rows/cols) ** 0.5``. Dividing the orthogonalised direction by the second moment
follows the paper's description; the result is renormalised to the orthogonalised direction's RMS so the
learning rate keeps Muon's meaning.
"""

from __future__ import annotations

import torch


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.float() / (g.norm() + eps)
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if transposed else x).to(g.dtype)


class M3(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0, slow_every: int = 8, slow_weight: float = 1.0, slow_beta: float = 0.9):
        params = list(params)
        if any(p.ndim != 2 for p in params):
            raise ValueError("M3 takes 2-D weight matrices only; put the others on AdamW")
        super().__init__(params, dict(lr=lr, momentum=momentum, beta2=beta2, eps=eps, weight_decay=weight_decay,
                                      slow_every=slow_every, slow_weight=slow_weight, slow_beta=slow_beta))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    for k in ("m1", "m2", "acc", "v"):
                        st[k] = torch.zeros_like(p)
                st["step"] += 1
                st["m1"].mul_(group["momentum"]).add_(g)
                st["acc"].add_(g)
                if st["step"] % group["slow_every"] == 0:
                    st["m2"].mul_(group["slow_beta"]).add_(st["acc"])
                    st["acc"].zero_()
                st["v"].mul_(group["beta2"]).addcmul_(g, g, value=1 - group["beta2"])
                v_hat = st["v"] / (1 - group["beta2"] ** st["step"])
                direction = newton_schulz(st["m1"])
                if st["m2"].any():
                    direction = direction + group["slow_weight"] * newton_schulz(st["m2"])
                rms = direction.pow(2).mean().sqrt()
                direction = direction / (v_hat.sqrt() + group["eps"])
                direction = direction * (rms / direction.pow(2).mean().sqrt().clamp(min=1e-12))
                scale = max(1.0, p.shape[0] / p.shape[1]) ** 0.5
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(direction, alpha=-group["lr"] * scale)
        return loss
