"""Pure-function sequence ops (torch only): naive references, chunked CPU-runnable forms, fla dispatch.

Legend: B batch, T tokens, H heads, K key dim, V value dim.
"""

from ._kernels import has_fla
from .delta_product import delta_product
from .delta_rule import delta_rule

__all__ = ["delta_rule", "delta_product", "has_fla"]
