"""nn.Modules built from ops: norms, positions, MLPs and token mixers, each registered by name."""

from archlab.nn import deltanet  # noqa: F401  (registers deltanet, gated_deltanet)
from archlab.nn.mixers import MIXERS, BlockDims, MixerOptions, TokenMixer, register_mixer
from archlab.nn.mlp import MLPS, FeedForward, MLPOptions, register_mlp
from archlab.nn.norms import NORMS, build_norm

__all__ = ["MIXERS", "MLPS", "NORMS", "BlockDims", "FeedForward", "MLPOptions", "MixerOptions", "TokenMixer",
           "build_norm", "register_mixer", "register_mlp"]
