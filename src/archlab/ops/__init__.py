"""Pure-function sequence ops (torch only): naive references, chunked CPU-runnable forms, fla dispatch.

Legend: B batch, T tokens, H heads, K key dim, V value dim.
"""

from ._kernels import has_fla
from .delta_product import delta_product
from .delta_rule import delta_rule
from .dilated_attention import dilated_attention, dilated_offsets
from .gated_ema import gated_ema

__all__ = ["delta_rule", "delta_product", "has_fla", "gated_ema", "dilated_attention", "dilated_offsets"]
