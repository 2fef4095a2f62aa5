"""Feed-forward blocks by name: the GPT-2 GELU MLP and the Llama SwiGLU MLP.

Like mixers, each registered MLP declares a typed ``Options`` class (``model.config.mlp_options``) and is built
as ``cls(dims, options)``; sizes come from the model config through ``BlockDims``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from archlab.config import Config
from archlab.nn.mixers import BlockDims
from archlab.registry import Registry

MLPS: Registry[type[nn.Module]] = Registry("mlp")


class MLPOptions(Config):
    """Options of a feed-forward block (none for the built-in ones; sizes come from the model config)."""


class FeedForward(nn.Module):
    """Base of registered MLPs: the typed options and the count helper."""

    Options: ClassVar[type[MLPOptions]] = MLPOptions

    @classmethod
    def parse_options(cls, options: dict[str, Any] | MLPOptions | None, where: str = "") -> MLPOptions:
        if isinstance(options, cls.Options):
            return options
        return cls.Options.parse(options or {}, where=where)

    @classmethod
    def count_parameters(cls, dims: BlockDims, options: MLPOptions | dict | None = None) -> int:
        with torch.device("meta"):
            module = cls(dims, cls.parse_options(options))
        return sum(p.numel() for p in module.parameters())


def register_mlp(name: str, *, help: str | None = None):
    def add(cls: type[FeedForward]) -> type[FeedForward]:
        if not (isinstance(cls, type) and issubclass(cls, FeedForward)):
            raise TypeError(f"mlp '{name}' must subclass archlab.nn.mlp.FeedForward")
        MLPS.register(name, cls, help=help)
        return cls

    return add


def _width(dims: BlockDims) -> int:
    return dims.intermediate_size or 4 * dims.hidden_size


@register_mlp("gelu")
class GeluMLP(FeedForward):
    """Linear -> GELU(tanh) -> Linear, with biases (GPT-2)."""

    def __init__(self, dims: BlockDims, options: MLPOptions | None = None):
        super().__init__()
        self.up_proj = nn.Linear(dims.hidden_size, _width(dims), bias=dims.bias)
        self.down_proj = nn.Linear(_width(dims), dims.hidden_size, bias=dims.bias)
        self.dropout = nn.Dropout(dims.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(F.gelu(self.up_proj(x), approximate="tanh")))


@register_mlp("swiglu")
class SwiGLUMLP(FeedForward):
    """down(SiLU(gate(x)) * up(x)) (Llama)."""

    def __init__(self, dims: BlockDims, options: MLPOptions | None = None):
        super().__init__()
        self.gate_proj = nn.Linear(dims.hidden_size, _width(dims), bias=dims.bias)
        self.up_proj = nn.Linear(dims.hidden_size, _width(dims), bias=dims.bias)
        self.down_proj = nn.Linear(_width(dims), dims.hidden_size, bias=dims.bias)
        self.dropout = nn.Dropout(dims.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))
