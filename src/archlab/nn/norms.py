"""Normalisation layers by name."""

from __future__ import annotations

from torch import nn

from archlab.registry import Registry

NORMS: Registry[type[nn.Module]] = Registry("norm")
NORMS.register("layernorm", nn.LayerNorm, help="LayerNorm with bias (GPT-2 style)")
NORMS.register("rmsnorm", nn.RMSNorm, help="RMSNorm with a learned scale (Llama style)")


def build_norm(kind: str, dim: int, eps: float = 1e-5) -> nn.Module:
    return NORMS.get(kind)(dim, eps=eps)
