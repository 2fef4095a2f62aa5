"""``apply_graft``: put a delta-rule memory into every selected attention of a pretrained model."""

from __future__ import annotations

from transformers import PreTrainedModel

from archlab.errors import ArchlabError
from archlab.graft.adapters import find_attention_modules
from archlab.graft.attention import GraftContext, graft_module, is_grafted
from archlab.graft.config import GraftConfig
from archlab.graft.lora import add_lora, select_trainable
from archlab.nn.memory import MemoryBranch


def apply_graft(model: PreTrainedModel, cfg: GraftConfig | dict | None = None) -> PreTrainedModel:
    """Graft a memory branch (memory-as-gate) onto ``model``'s attention layers, in place, and pick what trains.

    Steps: detect the attention layout of each layer (see ``archlab.graft.adapters``); give the selected ones a
    ``MemoryBranch`` sharing their projections; add LoRA (peft) or unfreeze the projections; record the graft
    settings in ``model.config.archlab_graft``.

    Args:
        model: a causal LM (transformers ``PreTrainedModel`` or any nn.Module with a supported attention).
        cfg: a ``GraftConfig`` (or its dict); None means all defaults.

    Returns:
        The same model object, grafted.

    Raises:
        ArchlabError: unsupported attention layout (naming the class), bad layer indices, a second graft, or
            full-projection training of a quantized model.
    """
    cfg = cfg if isinstance(cfg, GraftConfig) else GraftConfig.parse(cfg, where="graft")
    if is_grafted(model):
        raise ArchlabError(f"{type(model).__name__} is already grafted; apply_graft once per model")
    attentions = find_attention_modules(model)
    selected = range(len(attentions)) if cfg.layers is None else cfg.layers
    bad = [i for i in selected if i >= len(attentions)]
    if bad:
        raise ArchlabError(f"graft.layers {bad} out of range: the model has {len(attentions)} attention layers "
                           f"(indices 0..{len(attentions) - 1})")
    context = GraftContext()
    for slot in sorted(set(selected)):
        _, module, layout = attentions[slot]
        heads = layout.heads(module)
        memory = MemoryBranch(
            heads.num_heads, heads.num_kv_heads, heads.head_dim,
            operator=cfg.operator, chunk_size=cfg.resolved_chunk_size, feature_map=cfg.feature_map,
            beta_mode=cfg.beta_mode, bidirectional=cfg.bidirectional, tptt_compat=cfg.tptt_compat,
            mag_weight=cfg.mag_weight, output_scale=cfg.output_scale, impl=cfg.impl,
        )
        graft_module(module, layout, memory, slot, context)
    context.attach(model)
    if cfg.lora:
        add_lora(model, attentions, cfg)
    select_trainable(model, attentions, cfg.lora)
    config = getattr(model, "config", None)
    if config is not None:
        config.archlab_graft = cfg.to_dict()  # provenance in the saved config.json
    if hasattr(config, "use_cache") and cfg.bidirectional:
        config.use_cache = False  # a bidirectional memory cannot decode from a cache
    return model
