"""Seed 002's word-level data: a closed lowercase word vocabulary built on the training split, line windows.

The recipe (rato-tokyo/new-llm, see MECHANISMS.md section 3.2), as a real HF tokenizer:

- vocabulary: PAD=0, UNK=1, BOS=2, EOS=3, then the ``vocab_size - 4`` most frequent lowercase words of the
  training split (ties broken alphabetically, so the vocabulary is a pure function of the data); every other
  word is UNK. ``tokenizers`` WordLevel model, Lowercase normaliser, WhitespaceSplit pre-tokenizer, a
  ``<bos> $A <eos>`` post-processor; saved with the run's model (``tokenizer.json``).
- sequences: every text line (``unit: line``, WikiText) or every formatted record (``unit: record``, Dolly)
  with at least ``min_words`` words, wrapped in BOS/EOS. One longer than ``max_length`` tokens is cut into
  windows of ``max_length`` starting every ``stride`` tokens (the seed's 64 / 32; the last window is the
  first that reaches the end, so every token is covered) or truncated (``stride: null``); shorter ones are
  right-padded by the collator with PAD, whose label is -100: PAD is never a target, and accuracy and
  perplexity count real tokens only. The model shifts (logit t scores token t+1), as the seed's
  ``input = seq[:-1], target = seq[1:]``.

Perplexity on such a closed vocabulary, where UNK is among the most frequent targets, is not comparable with
ordinary WikiText-2 perplexity; the ``word_level`` eval reports UNK's share of the scored targets.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from archlab.config import config_hash
from archlab.data.build import (
    DataBundle,
    TokenSplit,
    _carve_document_splits,
    _read_cache,
    _subsample,
    _write_cache,
    cache_root,
)
from archlab.data.config import DataConfig, WordLevelOptions
from archlab.data.formatting import detect_format, to_prompt_completion
from archlab.data.sources import load_records
from archlab.data.tokenizers import token_byte_lengths
from archlab.errors import ArchlabError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
CACHE_VERSION = 1


def words(text: str) -> list[str]:
    """Lowercase whitespace words: what the tokenizer's normaliser and pre-tokenizer produce."""
    return text.lower().split()


def build_vocabulary(texts: list[str], vocab_size: int) -> list[str]:
    """The specials, then the ``vocab_size - 4`` most frequent words (count descending, then alphabetical)."""
    counts = Counter(w for text in texts for w in words(text))
    counts = Counter({w: n for w, n in counts.items() if w not in SPECIALS})
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: vocab_size - len(SPECIALS)]
    return [*SPECIALS, *(w for w, _ in ranked)]


def word_level_tokenizer(vocabulary: list[str]) -> PreTrainedTokenizerFast:
    """A ``PreTrainedTokenizerFast`` over ``vocabulary`` (ids in list order; the first four are the specials)."""
    if list(vocabulary[: len(SPECIALS)]) != list(SPECIALS):
        raise ValueError(f"a word-level vocabulary starts with {SPECIALS}")
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocabulary)}, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}", special_tokens=[(BOS, 2), (EOS, 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS,
                                   clean_up_tokenization_spaces=False)


def windows(ids: list[int], length: int, stride: int | None) -> list[list[int]]:
    """``ids`` cut into windows of ``length`` every ``stride`` tokens (the last one reaching the end), or the
    first ``length`` tokens when ``stride`` is None."""
    if len(ids) <= length or stride is None:
        return [ids[:length]]
    out, start = [], 0
    while True:
        out.append(ids[start : start + length])
        if start + length >= len(ids):
            return out
        start += stride


def sequences(pairs: list[tuple[str, str]], options: WordLevelOptions) -> list[str]:
    """The texts that become examples: lines or whole records, with at least ``min_words`` words."""
    texts = [p + c for p, c in pairs]
    if options.unit == "line":
        texts = [line for text in texts for line in text.splitlines()]
    return [t for t in texts if len(words(t)) >= options.min_words]


def encode_split(tok: PreTrainedTokenizerFast, texts: list[str], cfg: DataConfig) -> tuple[list, list]:
    if not texts:
        return ([], [])
    rows = [torch.tensor(w, dtype=torch.long)
            for ids in tok(texts)["input_ids"] for w in windows(ids, cfg.max_length, cfg.word_level.stride)]
    return (rows, rows)


def _pick(items: list[str], k: int, seed: int) -> list[str]:
    return random.Random(seed).sample(items, min(k, len(items)))


def build_word_level(cfg: DataConfig, *, use_cache: bool = True) -> DataBundle:
    """``build_data`` for ``data.tokenizer: word_level``: the vocabulary travels in the cached payload."""
    key = config_hash({"v": CACHE_VERSION, "word_level": cfg.model_dump(exclude={"max_eval_blocks"})}, 16)
    path = cache_root() / "tokenized" / f"word-level-{key}.pt"
    payload = _read_cache(path) if use_cache else None
    if payload is None:
        payload = tokenize_word_level(cfg)
        if use_cache:
            _write_cache(path, payload)
    tokenizer = word_level_tokenizer(payload["vocabulary"])
    return DataBundle(
        tokenizer=tokenizer,
        train=TokenSplit(*payload["train"]),
        validation=TokenSplit(*payload["validation"]),
        test=TokenSplit(*payload["test"]),
        test_prompts=payload["test_prompts"],
        token_bytes=token_byte_lengths(tokenizer),
        config=cfg,
    )


def tokenize_word_level(cfg: DataConfig) -> dict[str, Any]:
    """Records -> vocabulary (training split only) -> windows of every split; the payload build_data caches."""
    records = load_records(cfg)
    if not records.get("train"):
        raise ArchlabError(f"data source '{cfg.source}' has no 'train' split (splits: {sorted(records)})")
    fmt = cfg.format if cfg.format != "auto" else detect_format(records["train"][0], cfg.text_field)
    if fmt == "tokenized":
        raise ArchlabError("data.tokenizer 'word_level' needs text records, not pre-tokenized input_ids")
    pairs = {split: [to_prompt_completion(r, fmt, cfg.text_field, cfg.template) for r in recs]
             for split, recs in records.items()}
    pairs["train"] = _subsample(pairs["train"], cfg)
    if cfg.word_level.unit == "line" and len(pairs["train"]) < 20:  # few long documents: split their lines
        pairs = {split: [("", line) for p, c in docs for line in (p + c).splitlines()] for split, docs in pairs.items()}
    _carve_document_splits(pairs, cfg)
    texts = {split: sequences(pairs.get(split, []), cfg.word_level) for split in ("train", "validation", "test")}
    if not texts["train"]:
        raise ArchlabError(f"data source '{cfg.source}' has no training line with >= {cfg.word_level.min_words} "
                           f"words (data.word_level.min_words)")
    vocabulary = build_vocabulary(texts["train"], cfg.word_level.vocab_size)
    tok = word_level_tokenizer(vocabulary)
    out: dict[str, Any] = {"vocabulary": vocabulary}
    for split, split_texts in texts.items():
        out[split] = encode_split(tok, split_texts, cfg)
    held_out = pairs.get("test") or pairs.get("validation") or []
    out["test_prompts"] = [{"prompt": p.rstrip(), "reference": c} for p, c in held_out if p][:8] or [
        {"prompt": " ".join(words(c)[:12]), "reference": " ".join(words(c)[12:40])}
        for c in _pick(texts["validation"] or texts["train"], 2, cfg.split_seed)]
    return out
