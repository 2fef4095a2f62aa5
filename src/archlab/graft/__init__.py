"""Graft a delta-rule memory into a pretrained HF model (seed 000: TPTT / LiZA, memory-as-gate); see README.md."""

from archlab.graft.adapters import find_attention_modules
from archlab.graft.apply import apply_graft
from archlab.graft.config import GraftConfig

__all__ = ["GraftConfig", "apply_graft", "find_attention_modules"]
