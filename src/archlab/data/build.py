"""Records -> tokenized, split, packed tensors, cached on disk by a hash of the data config.

``build_data(cfg)`` is the one entry point the trainer and the evals use. Splits are fixed by
``split_seed``; the training order is a separate, resumable sampler (``archlab.data.loader``).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from archlab.config import config_hash
from archlab.data.config import DataConfig
from archlab.data.formatting import detect_format, to_prompt_completion
from archlab.data.sources import load_records
from archlab.data.tokenizers import (
    leading_special_ids,
    load_tokenizer,
    token_byte_lengths,
    tokenizer_identity,
    with_mask_token,
)
from archlab.errors import ArchlabError
from archlab.files import atomic_write

CACHE_VERSION = 2  # 2: prompt masks inside packed blocks; the tokenizer's leading specials per document
MIN_DOCS_FOR_DOCUMENT_SPLIT = 20


def cache_root() -> Path:
    return Path(os.environ.get("ARCHLAB_CACHE", Path.home() / ".cache" / "archlab"))


@dataclass
class TokenSplit:
    """Examples of one split; ``labels`` holds -100 where a token is not scored (masked prompt)."""

    input_ids: list[torch.Tensor]
    labels: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.input_ids)

    def num_tokens(self) -> int:
        return sum(len(x) for x in self.input_ids)


@dataclass
class DataBundle:
    tokenizer: PreTrainedTokenizerBase
    train: TokenSplit
    validation: TokenSplit
    test: TokenSplit
    test_prompts: list[dict[str, str]] = field(default_factory=list)
    token_bytes: torch.Tensor | None = None
    config: DataConfig | None = None

    def collate(self, examples: list[tuple[torch.Tensor, torch.Tensor]], pad_to: int | None = None) -> dict:
        """Right-pad a list of (input_ids, labels) to the longest (or ``pad_to``); labels -100 on padding."""
        length = pad_to or max(len(x) for x, _ in examples)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
        labels = torch.full((len(examples), length), -100, dtype=torch.long)
        mask = torch.zeros((len(examples), length), dtype=torch.long)
        for row, (x, y) in enumerate(examples):
            n = min(len(x), length)
            ids[row, :n], labels[row, :n], mask[row, :n] = x[:n], y[:n], 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def batch(self, split: TokenSplit, indices: list[int]) -> dict:
        pad_to = None
        if self.config is not None and self.config.packing == "pad" and self.config.padding == "max_length":
            pad_to = self.config.max_length
        return self.collate([(split.input_ids[i], split.labels[i]) for i in indices], pad_to)


def build_data(cfg: DataConfig, *, use_cache: bool = True) -> DataBundle:
    if cfg.tokenizer == "word_level":  # seed 002: the vocabulary is built on this data's training split
        from archlab.data.word_level import build_word_level

        return build_word_level(cfg, use_cache=use_cache)
    tokenizer = load_tokenizer(cfg.tokenizer)
    if cfg.add_mask_token:
        tokenizer = with_mask_token(tokenizer)
    key = config_hash(
        {"v": CACHE_VERSION, "data": cfg.model_dump(exclude={"max_eval_blocks"}), "tok": tokenizer_identity(tokenizer)},
        16,
    )
    path = cache_root() / "tokenized" / f"{key}.pt"
    payload = _read_cache(path) if use_cache else None
    if payload is None:
        payload = _tokenize(cfg, tokenizer)
        if use_cache:
            _write_cache(path, payload)
    return DataBundle(
        tokenizer=tokenizer,
        train=TokenSplit(*payload["train"]),
        validation=TokenSplit(*payload["validation"]),
        test=TokenSplit(*payload["test"]),
        test_prompts=payload["test_prompts"],
        token_bytes=token_byte_lengths(tokenizer),
        config=cfg,
    )


def _read_cache(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception:  # a truncated or foreign file is rebuilt, never trusted
        return None


def _write_cache(path: Path, payload: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _tokenize(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    records = load_records(cfg)
    if "train" not in records or not records["train"]:
        raise ArchlabError(f"data source '{cfg.source}' has no 'train' split (splits: {sorted(records)})")
    fmt = cfg.format if cfg.format != "auto" else detect_format(records["train"][0], cfg.text_field)
    if fmt == "tokenized":
        return _pretokenized(records, cfg)
    pairs = {
        split: [to_prompt_completion(r, fmt, cfg.text_field, cfg.template) for r in recs]
        for split, recs in records.items()
    }
    pairs["train"] = _subsample(pairs["train"], cfg)
    split_docs = len(pairs["train"]) >= MIN_DOCS_FOR_DOCUMENT_SPLIT or cfg.packing == "pad"
    if split_docs:
        _carve_document_splits(pairs, cfg)
    out = {name: _encode(pairs.get(name, []), cfg, tokenizer) for name in ("train", "validation", "test")}
    if not split_docs:
        _carve_block_splits(out, cfg)
    if not out["train"][0]:
        raise ArchlabError(f"data source '{cfg.source}' gave no training examples (is block_size larger than the text?)")
    test_pairs = pairs.get("test") or pairs.get("validation") or []
    out["test_prompts"] = [{"prompt": p, "reference": c} for p, c in test_pairs[:8] if p] or [
        {"prompt": c[:200], "reference": c[200:400]} for _, c in test_pairs[:2]
    ]
    return out


def _pretokenized(records: dict[str, list], cfg: DataConfig) -> dict[str, Any]:
    """Rows that already hold input_ids (seed 001's tokenized-grouped WikiText): used as they are."""
    rows = {name: [torch.tensor(r["input_ids"], dtype=torch.long) for r in recs] for name, recs in records.items()}
    rows["train"] = _subsample(rows["train"], cfg)
    _carve_document_splits(rows, cfg)
    out: dict[str, Any] = {}
    for name in ("train", "validation", "test"):
        ids = [x[: cfg.block_size if cfg.packing == "group" else cfg.max_length] for x in rows.get(name, [])]
        out[name] = (ids, ids)
    out["test_prompts"] = []
    return out


def _subsample(pairs: list, cfg: DataConfig) -> list:
    if cfg.fraction >= 1 and cfg.max_train_samples is None:
        return pairs
    order = list(range(len(pairs)))
    random.Random(cfg.split_seed).shuffle(order)
    keep = max(1, round(len(pairs) * cfg.fraction))
    if cfg.max_train_samples is not None:
        keep = min(keep, cfg.max_train_samples)
    return [pairs[i] for i in sorted(order[:keep])]


def _carve_document_splits(pairs: dict[str, list], cfg: DataConfig) -> None:
    """Make validation/test from train documents when the source lacks them (seeded, disjoint)."""
    train = pairs["train"]
    order = list(range(len(train)))
    random.Random(cfg.split_seed + 1).shuffle(order)
    taken: set[int] = set()
    for name, count, share in (
        ("validation", cfg.validation_samples, cfg.validation_fraction),
        ("test", cfg.test_samples, cfg.test_fraction),
    ):
        if pairs.get(name):
            pairs[name] = pairs[name][:count] if count is not None else pairs[name]
            continue
        n = count if count is not None else int(round(len(train) * share))
        chosen = [i for i in order if i not in taken][:n]
        taken.update(chosen)
        pairs[name] = [train[i] for i in sorted(chosen)]
    pairs["train"] = [doc for i, doc in enumerate(train) if i not in taken]


def _carve_block_splits(out: dict[str, Any], cfg: DataConfig) -> None:
    """Few, long documents: take validation/test as contiguous tail blocks of the token stream."""
    ids, labels = out["train"]
    n = len(ids)
    for name, share in (("validation", cfg.validation_fraction), ("test", cfg.test_fraction)):
        if out[name][0] or share <= 0:
            continue
        k = max(1, int(n * share))
        out[name] = (ids[-k:], labels[-k:])
        ids, labels = ids[:-k], labels[:-k]
        n = len(ids)
    out["train"] = (ids, labels)


def _encode(pairs: list[tuple[str, str]], cfg: DataConfig, tok: PreTrainedTokenizerBase):
    if not pairs:
        return ([], [])
    eos = tok.eos_token_id
    # every document starts as the tokenizer starts a text (BOS for Llama-style tokenizers), as in evaluation
    lead = leading_special_ids(tok)
    prompts = [lead + p for p in tok([p for p, _ in pairs], add_special_tokens=False)["input_ids"]]
    bodies = tok([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    if cfg.packing == "group":
        stream: list[int] = []
        label_stream: list[int] = []  # the loss mask travels with the tokens into the packed blocks
        for p, c in zip(prompts, bodies, strict=True):
            stream.extend(p + c + [eos])
            label_stream.extend(([-100] * len(p) if cfg.mask_prompt else p) + c + [eos])
        usable = (len(stream) // cfg.block_size) * cfg.block_size
        rows = list(torch.tensor(stream[:usable], dtype=torch.long).view(-1, cfg.block_size).unbind(0))
        if not cfg.mask_prompt:
            return (rows, rows)
        labels = torch.tensor(label_stream[:usable], dtype=torch.long).view(-1, cfg.block_size)
        return (rows, list(labels.unbind(0)))
    ids_out, labels_out = [], []
    for p, c in zip(prompts, bodies, strict=True):
        ids = (p + c + [eos])[: cfg.max_length]
        labels = ([-100] * len(p) if cfg.mask_prompt else p) + c + [eos]
        ids_out.append(torch.tensor(ids, dtype=torch.long))
        labels_out.append(torch.tensor(labels[: cfg.max_length], dtype=torch.long))
    return (ids_out, labels_out)
