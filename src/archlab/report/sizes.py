"""Parameters (total and non-embedding) and training compute of a run, for fair comparisons.

Counts come from the run's model built on the ``meta`` device (shapes only, no weights, no data), so
pending and failed runs have them too. Training FLOPs are the run's own count where training recorded
one (``train_flops`` in its status); otherwise ≈ 6·N·D with N all parameters and D the training tokens
seen, marked as an estimate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from archlab.plan import RunConfig


@dataclass(frozen=True)
class Size:
    total: int
    non_embedding: int  # total minus token and position embeddings and an untied output embedding
    trainable: int


@lru_cache(maxsize=8)
def _vocab(tokenizer: str) -> int | None:
    from archlab.plan.validate import _tokenizer

    try:
        tok = _tokenizer(tokenizer)
    except Exception:  # noqa: BLE001  (a report never fails on a tokenizer it cannot load)
        return None
    return len(tok) if tok is not None else None


@lru_cache(maxsize=256)
def _size(config_json: str) -> Size | None:
    import torch

    from archlab.plan.build import build_run_model

    config = RunConfig.parse(json.loads(config_json), where="report")
    name = config.data.tokenizer
    if name == "word_level":  # built from the data when the run starts; its size is in the config (seed 002)
        name = f"word_level:{config.data.word_level.vocab_size}"
    vocab = _vocab(name)
    if vocab is None or config.model.pretrained:
        return None  # a hub model's config is not fetched by the report
    try:
        with torch.device("meta"):
            model = build_run_model(config, vocab)
    except Exception:  # noqa: BLE001  (an unbuildable run shows — ; its own status says why)
        return None
    return count_parameters(model)


def count_parameters(model) -> Size:
    params = {id(p): p for p in model.parameters()}  # tied weights once
    total = sum(p.numel() for p in params.values())
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    embedding_ids = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None and hasattr(module, "weight"):
            embedding_ids.add(id(module.weight))
    for name, module in model.named_modules():  # learned position tables
        if isinstance(module, torch_embedding()) and "pos" in name.rsplit(".", 1)[-1]:
            embedding_ids.add(id(module.weight))
    embedding = sum(params[i].numel() for i in embedding_ids if i in params)
    return Size(total, total - embedding, trainable)


def torch_embedding():
    from torch import nn

    return nn.Embedding


def run_size(config: RunConfig | None) -> Size | None:
    if config is None:
        return None
    # only what shapes the model is in the key: a sweep over learning rates or seeds builds one model, not 1,000
    data = config.to_dict()
    key = {**data, "train": {k: data["train"][k] for k in ("trainable", "objective") if k in data["train"]},
           "eval": []}
    return _size(json.dumps(key, sort_keys=True, default=str))


def human(n: float | None) -> str:
    """1234567 -> '1.23M' (never cut: three significant digits and a unit)."""
    if n is None:
        return "—"
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"
