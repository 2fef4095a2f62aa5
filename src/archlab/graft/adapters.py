"""Per-family attention layouts: where a grafted memory finds q/k/v and the output projection.

A layout is detected from the attribute names of the attention module, so any model that keeps one of these
layouts works, whatever its class (Llama, Qwen2, Mistral, OLMo/OLMoE, Dream and archlab's own decoder share
the first; Phi-3 and OpenELM the fused one; GPT-2 its Conv1D pair).

Legend: B batch, T tokens, H query heads, G key/value heads, D head dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from archlab.errors import ArchlabError


@dataclass(frozen=True)
class Heads:
    num_heads: int
    num_kv_heads: int
    head_dim: int


def _out_features(module: nn.Module) -> int:
    """Output width of a Linear, a peft/bitsandbytes wrapper of one, or a GPT-2 Conv1D."""
    for attr in ("out_features", "nf"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    weight = getattr(module, "weight", None)
    if weight is not None and weight.ndim == 2:
        return weight.shape[0]
    raise ArchlabError(f"cannot tell the output width of {type(module).__name__}")


class Layout:
    """How one attention layout exposes its projections (subclasses per layout)."""

    name = ""
    inputs: tuple[str, ...] = ()  # projections whose outputs the memory reads, in call order
    output = ""  # the output projection the memory's result goes through

    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        return all(isinstance(getattr(module, a, None), nn.Module) for a in (*cls.inputs, cls.output))

    def heads(self, module: nn.Module) -> Heads:
        raise NotImplementedError

    def split(self, module: nn.Module, outputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Projection outputs -> (q [B,T,H*D], k [B,T,G*D], v [B,T,G*D])."""
        return tuple(outputs)

    @property
    def lora_targets(self) -> tuple[str, ...]:
        return (*self.inputs, self.output)


class SeparateProjections(Layout):
    """q_proj / k_proj / v_proj / o_proj (Llama, Qwen2, Mistral, OLMo(E), Dream, archlab)."""

    name = "q_proj/k_proj/v_proj/o_proj"
    inputs = ("q_proj", "k_proj", "v_proj")
    output = "o_proj"

    def heads(self, module: nn.Module) -> Heads:
        head_dim = getattr(module, "head_dim", None)
        if not isinstance(head_dim, int):
            config = module.config
            head_dim = config.hidden_size // config.num_attention_heads
        return Heads(_out_features(module.q_proj) // head_dim, _out_features(module.k_proj) // head_dim, head_dim)


class FusedQKV(Layout):
    """One qkv_proj split [q | k | v] by head counts, then o_proj (Phi-3) or out_proj (OpenELM)."""

    inputs = ("qkv_proj",)

    def __init__(self, output: str):
        self.output = output
        self.name = f"qkv_proj/{output}"

    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        return isinstance(getattr(module, "qkv_proj", None), nn.Module) and any(
            isinstance(getattr(module, o, None), nn.Module) for o in ("o_proj", "out_proj")
        )

    def heads(self, module: nn.Module) -> Heads:
        config = getattr(module, "config", None)
        head_dim = getattr(module, "head_dim", None) or config.hidden_size // config.num_attention_heads
        # OpenELM names its (per-layer) head counts num_q_heads / num_k_heads; Phi-3 uses the config
        num_heads = getattr(module, "num_q_heads", None) or config.num_attention_heads
        num_kv = getattr(module, "num_k_heads", None) or getattr(module, "num_key_value_heads", None)
        num_kv = num_kv or getattr(config, "num_key_value_heads", None) or num_heads
        width = _out_features(module.qkv_proj)
        if width != (num_heads + 2 * num_kv) * head_dim:
            raise ArchlabError(
                f"{type(module).__name__}.qkv_proj has {width} outputs, expected (q {num_heads} + k {num_kv} + v "
                f"{num_kv} heads) x {head_dim}; this fused layout is not supported"
            )
        return Heads(num_heads, num_kv, head_dim)

    def split(self, module: nn.Module, outputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        heads = module.archlab_memory
        q_width, kv_width = heads.num_heads * heads.head_dim, heads.num_kv_heads * heads.head_dim
        return tuple(outputs[0].split([q_width, kv_width, kv_width], dim=-1))


class GPT2Projections(Layout):
    """GPT-2's c_attn (Conv1D producing [q | k | v]) and c_proj."""

    name = "c_attn/c_proj"
    inputs = ("c_attn",)
    output = "c_proj"

    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        return super().matches(module) and not getattr(module, "is_cross_attention", False)

    def heads(self, module: nn.Module) -> Heads:
        return Heads(module.num_heads, module.num_heads, module.head_dim)

    def split(self, module: nn.Module, outputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(outputs[0].split(module.split_size, dim=-1))


def detect_layout(module: nn.Module) -> Layout | None:
    """The layout of ``module`` if it is an attention we can graft, else None."""
    if FusedQKV.matches(module):
        return FusedQKV("o_proj" if isinstance(getattr(module, "o_proj", None), nn.Module) else "out_proj")
    if SeparateProjections.matches(module):
        return SeparateProjections()
    if GPT2Projections.matches(module):
        return GPT2Projections()
    return None


def find_attention_modules(model: nn.Module) -> list[tuple[str, nn.Module, Layout]]:
    """Every graftable attention of ``model`` in module order, with its layout.

    Raises:
        ArchlabError: when none is found, naming the attention-like module classes that were seen.
    """
    found = []
    for name, module in model.named_modules():
        layout = detect_layout(module)
        if layout is not None:
            found.append((name, module, layout))
    if found:
        return found
    suspects = sorted({type(m).__name__ for _, m in model.named_modules()
                       if "attention" in type(m).__name__.lower() or "attn" in type(m).__name__.lower()})
    seen = ", ".join(suspects) if suspects else "no module whose class name mentions attention"
    raise ArchlabError(
        f"cannot graft {type(model).__name__}: unsupported attention layout in {seen}; supported layouts are "
        f"q_proj/k_proj/v_proj/o_proj, qkv_proj + o_proj/out_proj, and GPT-2's c_attn/c_proj"
    )
