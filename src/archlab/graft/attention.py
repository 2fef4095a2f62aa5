"""The grafted attention: the base module, unchanged, plus a memory branch mixed in through its output projection.

Grafting swaps the class of the attention *instance* for a subclass (``Grafted<Base>``) whose forward runs the
base forward with the memory mixed into the input of the output projection (which is affine, so this equals
mixing the two projected outputs, with one projection instead of two). So parameter names, state-dict keys, LoRA target names and the model's own
call signature all stay those of the base model; the only new child is ``archlab_memory`` (no parameters).

The memory reads the base's own q/k/v projection outputs, captured with forward hooks during the base call,
so the projections are computed once (and include LoRA when it is injected).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from archlab.errors import ArchlabError
from archlab.graft.adapters import Layout
from archlab.nn.cache import states_of
from archlab.nn.memory import MemoryBranch, MemoryState

CACHE_KEYS = ("cache", "past_key_values", "past_key_value")  # v5, v4 and remote-code (OpenELM) names
_GRAFTED_CLASSES: dict[type, type] = {}
_OUTPUT_INPUT = "<output projection input>"
_MIXED = "<mixed before the output projection>"


class GraftContext:
    """What the grafted layers of one model share: the 2-D padding mask of the current forward call.

    Attention modules in transformers v5 get a prepared 4-D (or no) mask, so the 2-D padding mask is taken from
    the top-level forward call by a pre-hook. Decoding state is not kept here: it lives in the cache layer of
    each attention (``archlab.nn.cache.states_of``), so copying, batching and reordering the cache carry it.
    """

    def __init__(self) -> None:
        self.attention_mask: torch.Tensor | None = None

    def padding_mask(self, batch: int, t_new: int) -> torch.Tensor | None:
        """[B, t_new] mask of the newest tokens, or None when nothing is padded (or the shapes do not fit)."""
        mask = self.attention_mask
        if mask is None or mask.shape[0] != batch or mask.shape[1] < t_new:
            return None
        mask = mask[:, -t_new:]
        return None if bool(mask.all()) else mask

    def attach(self, model: nn.Module) -> None:
        """Hook ``model``'s forward so every call publishes its 2-D attention mask to the grafted layers."""
        params = list(inspect.signature(model.forward).parameters)
        position = params.index("attention_mask") if "attention_mask" in params else None

        def remember(module, args, kwargs):
            mask = kwargs.get("attention_mask")
            if mask is None and position is not None and len(args) > position:
                mask = args[position]
            self.attention_mask = mask if isinstance(mask, torch.Tensor) and mask.ndim == 2 else None

        # Kept after the call on purpose: gradient checkpointing re-runs the layers during backward, after the
        # top-level forward has returned, and the recomputation must see the same mask.
        model.register_forward_pre_hook(remember, with_kwargs=True)


class GraftedAttentionMixin:
    """Forward of a grafted attention: base output o, memory output m, returns (1 - mu) * o + mu * m."""

    archlab_memory: MemoryBranch
    archlab_layout: Layout
    archlab_slot: int
    archlab_context: GraftContext

    def forward(self, *args, **kwargs):
        memory = self.archlab_memory
        cache = next((kwargs[k] for k in CACHE_KEYS if kwargs.get(k) is not None), None)
        decoding = cache is not None and not self.training and not memory.bidirectional
        if memory.mag_weight == 0 and not decoding:  # the mix would return the base output unchanged
            return super().forward(*args, **kwargs)
        captured: dict[str, torch.Tensor] = {}
        layout = self.archlab_layout
        handles = [getattr(self, name).register_forward_hook(_capture(captured, name)) for name in layout.inputs]

        def mix_before_output(module, inputs):
            # The output projection is affine (Linear / LoRA / Conv1D), so (1 - mu) W a + mu W m = W((1 - mu) a + mu m)
            # (+ the same bias): mixing its input saves a second projection, forward and backward.
            if not all(n in captured for n in layout.inputs):
                captured[_OUTPUT_INPUT] = inputs[0]
                return None
            captured[_MIXED] = True
            o_memory = self._memory_output([captured[n] for n in layout.inputs], inputs[0], cache, decoding)
            return (memory.mix(inputs[0], o_memory), *inputs[1:])

        handles.append(getattr(self, layout.output).register_forward_pre_hook(mix_before_output))
        try:
            out = super().forward(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        if captured.get(_MIXED):
            return out
        # a base that bypasses its projection modules (fused kernels) still works, at the cost of a recompute
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        outputs = [captured[n] if n in captured else getattr(self, n)(hidden) for n in layout.inputs]
        o_memory = self._memory_output(outputs, captured.get(_OUTPUT_INPUT), cache, decoding)
        o_memory = getattr(self, layout.output)(o_memory)
        base = out[0] if isinstance(out, tuple) else out
        mixed = memory.mix(base, o_memory)
        return (mixed, *out[1:]) if isinstance(out, tuple) else mixed

    def _memory_output(self, outputs: list[torch.Tensor], attended: torch.Tensor | None, cache, decoding: bool):
        """The memory branch's output before the output projection; updates the decoding state in ``cache``."""
        memory = self.archlab_memory
        q, k, v = self.archlab_layout.split(self, outputs)
        rms = None
        if attended is not None:  # one reduction pass (an fp32 copy, square, mean and sqrt took four)
            rms = torch.linalg.vector_norm(attended, dim=-1, keepdim=True, dtype=torch.float32)
            rms = rms / attended.shape[-1] ** 0.5
        holder = states_of(cache, self._cache_layer_index()) if decoding else None
        state = MemoryState.from_tensors(holder.states) if holder is not None else None
        o_memory, new_state = memory(q, k, v, self.archlab_context.padding_mask(*q.shape[:2]), state,
                                     return_state=decoding, attention_rms=rms)
        if holder is not None:
            for name in [n for n in holder.states if n.startswith(MemoryState.PREFIX)]:
                holder.set(name, None)
            for name, tensor in new_state.to_tensors().items():
                holder.set(name, tensor)
            holder.seen_tokens += q.shape[1]
        return o_memory

    def _cache_layer_index(self) -> int:
        """The cache layer of this attention: its own ``layer_idx`` (HF attentions have one), else its slot."""
        index = getattr(self, "layer_idx", None)
        return index if isinstance(index, int) else self.archlab_slot


def _capture(store: dict[str, torch.Tensor], name: str):
    def hook(module, inputs, output):
        store[name] = output

    return hook


def grafted_class(base: type) -> type:
    """``Grafted<Base>``: the mixin over ``base`` (one class per base class, reused)."""
    if base not in _GRAFTED_CLASSES:
        _GRAFTED_CLASSES[base] = type(f"Grafted{base.__name__}", (GraftedAttentionMixin, base), {})
    return _GRAFTED_CLASSES[base]


def graft_module(
    module: nn.Module, layout: Layout, memory: MemoryBranch, slot: int, context: GraftContext
) -> None:
    """Turn ``module`` into its grafted class in place (parameters and names untouched)."""
    if isinstance(module, GraftedAttentionMixin):
        raise ArchlabError(f"{type(module).__name__} is already grafted; apply_graft once per model")
    module.archlab_layout = layout
    module.archlab_slot = slot
    module.archlab_context = context
    module.archlab_memory = memory
    module.__class__ = grafted_class(type(module))


def is_grafted(model: nn.Module) -> bool:
    return any(isinstance(m, GraftedAttentionMixin) for m in model.modules())
