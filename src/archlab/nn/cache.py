"""Per-layer inference state that lives inside the Hugging Face ``Cache`` object.

One owner for all state: attention KV, a recurrent matrix state, a conv window or a grafted memory all sit
in ``cache.layers[layer_idx]``, so every consumer that copies (``copy.deepcopy``), batches
(``batch_repeat_interleave``, ``batch_select_indices``), reorders (beam search's ``reorder_cache``) or
resets a cache keeps every layer in step. There are no side tables keyed by object identity.

- ``StateLayer``: the cache layer of a recurrent mixer (no KV). It is a transformers ``CacheLayerMixin``, so
  ``DynamicCache(config=...)`` builds it from ``config.layer_types`` (see ``register_layer_type``) and
  ``cache.get_seq_length()`` works on all-recurrent models (it counts the tokens seen).
- ``states_of(cache, layer_idx)``: the state holder of a layer. A KV layer (e.g. the ``DynamicLayer`` of a
  pretrained Llama whose attention got a grafted memory) is upgraded in place to a subclass that carries
  named states next to its keys and values.

Every state tensor is batch-first ([B, ...]). A recurrent state cannot be rolled back token by token, so
such a layer reports ``is_croppable = False`` and ``crop`` that would remove tokens raises.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers.cache_utils import CacheLayerMixin, DynamicLayer, LinearAttentionCacheLayerMixin

__all__ = ["StateLayer", "StateMixin", "cache_length", "states_of"]


class StateMixin:
    """Named batch-first state tensors and a token counter, kept in step with the cache's batch operations."""

    __slots__ = ()  # lets an existing KV layer object switch to a subclass carrying states (same layout)
    states: dict[str, torch.Tensor]
    seen_tokens: int

    def init_states(self) -> None:
        self.states = {}
        self.seen_tokens = 0

    # ---------------------------------------------------------------------------------------- access
    def get(self, name: str) -> torch.Tensor | None:
        return self.states.get(name)

    def set(self, name: str, value: torch.Tensor | None) -> None:
        """Store ``value`` (detached: decoding state never carries a graph) or drop it when None."""
        if value is None:
            self.states.pop(name, None)
        else:
            self.states[name] = value.detach()

    # --------------------------------------------------- batch operations on the states (KV is the base's)
    def _map_states(self, fn) -> None:
        self.states = {name: fn(value) for name, value in self.states.items()}

    def _reorder_states(self, beam_idx: torch.LongTensor) -> None:
        self._map_states(lambda v: v.index_select(0, beam_idx.to(v.device)))

    def _repeat_states(self, repeats: int) -> None:
        self._map_states(lambda v: v.repeat_interleave(repeats, dim=0))

    def _select_states(self, indices: torch.Tensor) -> None:
        self._map_states(lambda v: v[indices.to(v.device)])


def _refuse_rollback(layer: StateMixin, max_length: int) -> None:
    """``crop(max_length)`` as ``DynamicLayer`` reads it (keep max_length tokens; negative: drop that many)."""
    removes = max_length < 0 or max_length < layer.seen_tokens
    if layer.states and removes:
        raise ValueError(
            "this cache holds a recurrent state, which cannot be rolled back token by token; crop is "
            "unsupported (assisted / speculative decoding needs an attention-only model)"
        )


class StateLayer(StateMixin, CacheLayerMixin):
    """Cache layer of a recurrent mixer: named states only, no keys/values."""

    is_compileable = False
    supports_early_init = False

    def __init__(self, **kwargs: Any):
        super().__init__()
        self.init_states()

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise TypeError("a recurrent layer has no key/value cache; use states_of(cache, layer_idx)")

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        raise TypeError("a recurrent layer has no key/value cache; use states_of(cache, layer_idx)")

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen_tokens + query_length, 0

    def get_seq_length(self) -> int:
        return self.seen_tokens

    def get_max_length(self) -> int:
        return -1  # no sequence axis: a recurrent state has no length limit

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._reorder_states(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._repeat_states(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._select_states(indices)

    def reset(self) -> None:
        self.init_states()

    def offload(self) -> None:
        self._map_states(lambda v: v.to("cpu", non_blocking=True))

    def prefetch(self) -> None: ...

    @property
    def is_croppable(self) -> bool:
        return not self.states

    def crop(self, max_length: int) -> None:
        _refuse_rollback(self, max_length)


_WITH_STATES: dict[type, type] = {}


def _with_states_class(base: type) -> type:
    """``<Base>WithStates``: a KV layer class whose objects also carry named states (one class per base, reused).

    The base comes first among the bases so the object layout is the base's (an existing layer object can
    switch class); the methods below run the state part, then the base's own KV part.
    """
    if base in _WITH_STATES:
        return _WITH_STATES[base]

    def reorder_cache(self, beam_idx):
        self._reorder_states(beam_idx)
        base.reorder_cache(self, beam_idx)

    def batch_repeat_interleave(self, repeats):
        self._repeat_states(repeats)
        base.batch_repeat_interleave(self, repeats)

    def batch_select_indices(self, indices):
        self._select_states(indices)
        base.batch_select_indices(self, indices)

    def reset(self):
        self.init_states()
        base.reset(self)

    def offload(self):
        self._map_states(lambda v: v.to("cpu", non_blocking=True))
        base.offload(self)

    def crop(self, max_length):
        _refuse_rollback(self, max_length)
        base.crop(self, max_length)

    def is_croppable(self) -> bool:
        attr = inspect.getattr_static(base, "is_croppable", False)
        return not self.states and bool(attr.__get__(self) if isinstance(attr, property) else attr)

    methods = dict(reorder_cache=reorder_cache, batch_repeat_interleave=batch_repeat_interleave,
                   batch_select_indices=batch_select_indices, reset=reset, offload=offload, crop=crop,
                   is_croppable=property(is_croppable))
    cls = type(f"{base.__name__}WithStates", (base, StateMixin), {"_layer_type": None, "__slots__": (), **methods})
    _WITH_STATES[base] = cls
    return cls


def states_of(cache: Any, layer_idx: int) -> StateMixin:
    """The state holder of layer ``layer_idx`` in ``cache`` (a transformers ``Cache``), created if needed.

    A missing entry (a ``DynamicCache()`` built without a config grows its layers lazily) becomes a
    ``StateLayer``; an existing KV layer is upgraded in place so its keys, values and states move together.

    Raises:
        TypeError: when ``cache`` is not a transformers ``Cache`` (legacy tuples carry no state).
    """
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list):
        raise TypeError(f"recurrent state needs a transformers Cache object, got {type(cache).__name__}")
    while len(layers) < layer_idx:
        layers.append(DynamicLayer())
    if len(layers) == layer_idx:
        layers.append(StateLayer())
    layer = layers[layer_idx]
    if isinstance(layer, StateMixin):
        return layer
    unused_placeholder = (type(layer) is DynamicLayer and not layer.is_initialized) or (
        isinstance(layer, LinearAttentionCacheLayerMixin) and not isinstance(layer, CacheLayerMixin)
        and not any(layer.has_previous_state.values()))
    if unused_placeholder:
        # a lazily made DynamicLayer, or the LinearAttentionLayer that DynamicCache(config=...) builds for a
        # "linear_attention" layer (it cannot batch-select or count tokens): nothing is stored in it yet
        layers[layer_idx] = StateLayer()
        return layers[layer_idx]
    layer.__class__ = _with_states_class(type(layer))
    layer.init_states()
    return layer


def cache_length(cache: Any) -> int:
    """Tokens a cache has seen (0 for None or a fresh cache), also when its first layers are recurrent."""
    for layer in getattr(cache, "layers", None) or []:
        if isinstance(layer, CacheLayerMixin):
            return layer.get_seq_length()
    return 0
