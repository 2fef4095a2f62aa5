"""nn.Modules built from ops: norms, positions, MLPs and token mixers, each registered by name."""

from archlab.nn.mixers import MIXERS
from archlab.nn.mlp import MLPS
from archlab.nn.norms import NORMS, build_norm

__all__ = ["MIXERS", "MLPS", "NORMS", "build_norm"]
