"""Cross-entropy and bits per byte of token streams, shared by long_ppl, continual and multilingual_bpb."""

from __future__ import annotations

from functools import lru_cache

import torch
from transformers import PreTrainedTokenizerBase

from archlab.data import encode_document, token_byte_lengths
from archlab.evals.base import EvalContext
from archlab.evals.lib.loglik import model_max_length, token_nlls
from archlab.models.scoring import LossTotals


@lru_cache(maxsize=8)
def byte_lengths(tok: PreTrainedTokenizerBase) -> torch.Tensor:
    """UTF-8 bytes per token id (cached: the vocabulary scan is slow for large vocabularies)."""
    return token_byte_lengths(tok)


def default_window(ctx: EvalContext, window: int | None, cap: int = 2048) -> int:
    return window or min(model_max_length(ctx.model), cap)


def stream_loss(ctx: EvalContext, ids: list[int], window: int, stride: int | None = None) -> tuple[LossTotals, torch.Tensor]:
    """Totals over ``ids[1:]`` scored with a sliding window, and the per-token NLLs (for curves).

    Bytes are the UTF-8 bytes of the scored tokens, so bits per byte compares tokenizers; special tokens
    (no bytes) count in the loss, not in bits per byte (see archlab.models.scoring).
    """
    nll = token_nlls(ctx.model, ids, window=window, stride=stride, batch_size=max(1, ctx.batch_size // 2))
    targets = torch.tensor(ids[1:], dtype=torch.long)
    sizes = byte_lengths(ctx.tokenizer)[targets] if len(targets) else torch.zeros(0, dtype=torch.long)
    return LossTotals(nll=float(nll.sum()), tokens=len(targets), bytes=int(sizes.sum()),
                      byte_nll=float((nll * (sizes > 0)).sum())), nll


def encode_text(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    """A document as training reads one (the tokenizer's leading specials, e.g. a BOS, then the text)."""
    return encode_document(tok, text)


def utf8_prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` within ``max_bytes`` UTF-8 bytes (never a broken character)."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
