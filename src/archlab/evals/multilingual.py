"""Bits per byte by language and domain (``multilingual_bpb``), on held-out slices shipped with archlab.

Bits per byte divides the summed loss by the UTF-8 bytes of the scored text, so models with different
tokenizers (bytes, BPE) compare. The ``quran_*`` slices are the same verses in English, Chinese and
Arabic (a content-controlled comparison); ``lunyu_zh`` is independent Chinese prose (the Analects, classical), ``wiki`` English
encyclopedia text and ``code`` Python from the standard library (see data/embedded/PROVENANCE.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archlab.config import Config
from archlab.evals.base import EvalContext, EvalResult, register_eval
from archlab.evals.ppl import default_window, encode_text, stream_loss, utf8_prefix
from archlab.evals.texts import corpus_documents, read_eval_set

Slice = Literal["quran_en", "quran_zh", "quran_ar", "lunyu_zh", "wiki", "code"]
LANGUAGE = {"quran_en": "English", "quran_zh": "Chinese", "quran_ar": "Arabic", "lunyu_zh": "Chinese",
            "wiki": "English", "code": "Python"}


class MultilingualParams(Config):
    slices: list[Slice] = Field(["quran_en", "quran_zh", "quran_ar", "lunyu_zh", "wiki", "code"],
                                description="held-out slices to score")
    max_bytes: int = Field(16000, ge=64, description="UTF-8 bytes scored per slice (a prefix of the slice)")
    window: int | None = Field(None, ge=2, description="tokens per forward pass; default the model's max "
                               "length (at most 2048)")
    stride: int | None = Field(None, ge=1, description="new tokens scored per window; default window // 2")


def slice_text(name: str) -> str:
    if name in ("wiki", "code"):
        return "\n\n".join(corpus_documents(name, ("test",)))
    return "\n".join(r["text"] for r in read_eval_set("multilingual", name))


@register_eval("multilingual_bpb", MultilingualParams, metrics=("bits_per_byte*", "loss/*"))
def multilingual_bpb(ctx: EvalContext, params: MultilingualParams) -> EvalResult:
    """Bits per byte (and loss) on English, Chinese, Arabic and code slices, the same bytes for every model."""
    window = default_window(ctx, params.window)
    metrics, items, tokens = {}, [], 0
    for name in params.slices:
        text = utf8_prefix(slice_text(name), params.max_bytes)
        totals, _ = stream_loss(ctx, encode_text(ctx.tokenizer, text), window, params.stride)
        metrics[f"bits_per_byte/{name}"] = totals.bits_per_byte
        metrics[f"loss/{name}"] = totals.loss
        tokens += totals.tokens
        items.append({"slice": name, "language": LANGUAGE[name], "bytes": totals.bytes, "tokens": totals.tokens,
                      "bytes_per_token": totals.bytes / max(totals.tokens, 1), "loss": totals.loss,
                      "bits_per_byte": totals.bits_per_byte})
    values = [v for k, v in metrics.items() if k.startswith("bits_per_byte/") and v is not None]
    metrics["bits_per_byte_mean"] = sum(values) / len(values) if values else None
    return EvalResult(
        metrics=metrics,
        n=tokens,
        headline="bits_per_byte_mean",
        details={"slices": items, "window": window, "stride": params.stride or window // 2,
                 "max_bytes": params.max_bytes},
        items=items,
    )
