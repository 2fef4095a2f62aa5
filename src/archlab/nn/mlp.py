"""Feed-forward blocks by name: the GPT-2 GELU MLP and the Llama SwiGLU MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archlab.registry import Registry

MLPS: Registry[type[nn.Module]] = Registry("mlp")


@MLPS.register("gelu")
class GeluMLP(nn.Module):
    """Linear -> GELU(tanh) -> Linear, with biases (GPT-2)."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(F.gelu(self.up_proj(x), approximate="tanh")))


@MLPS.register("swiglu")
class SwiGLUMLP(nn.Module):
    """down(SiLU(gate(x)) * up(x)) (Llama)."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))
