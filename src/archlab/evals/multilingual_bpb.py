"""Bits per byte by language and domain (``multilingual_bpb``), on held-out slices shipped with archlab.

Bits per byte divides the summed loss by the UTF-8 bytes of the scored text, so models with different
tokenizers (bytes, BPE) compare. The ``quran_*`` slices are the same verses in English, Chinese and
Arabic (a content-controlled comparison); ``lunyu_zh`` is independent Chinese prose (the Analects, classical), ``wiki`` English
encyclopedia text and ``code`` Python from the standard library (see data/embedded/PROVENANCE.md).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from archlab.config import Config
from archlab.evals.base import EvalContext, EvalResult, register_eval
from archlab.evals.lib.ppl import default_window, encode_text, stream_loss, utf8_prefix
from archlab.evals.lib.texts import LANGUAGE, Slice, slice_text  # noqa: F401  (public names of this eval)
from archlab.evals.lib.views import EvalRun, View, eval_view, fmt, pyplot, save_figure


class MultilingualParams(Config):
    slices: list[Slice] = Field(["quran_en", "quran_zh", "quran_ar", "lunyu_zh", "wiki", "code"],
                                description="held-out slices to score")
    max_bytes: int = Field(16000, ge=64, description="UTF-8 bytes scored per slice (a prefix of the slice)")
    window: int | None = Field(None, ge=2, description="tokens per forward pass; default the model's max "
                               "length (at most 2048)")
    stride: int | None = Field(None, ge=1, description="new tokens scored per window; default window // 2")


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


@eval_view("multilingual_bpb", order=80)
def multilingual_view(runs: list[EvalRun], plots: Path) -> View:
    """Bits per byte per language and domain, as a table and a grouped bar chart."""
    import numpy as np

    slices = [i["slice"] for i in runs[0].details["slices"]]
    header = ["Variant", *slices, "mean"]
    body = [[r.title, *[fmt(r.metrics.get(f"bits_per_byte/{s}"), 3) for s in slices],
             fmt(r.metrics.get("bits_per_byte_mean"), 3)] for r in runs]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(slices) * max(1, len(runs)) / 2 + 3), 4))
    width = 0.8 / len(runs)
    for k, r in enumerate(runs):
        values = [r.metrics.get(f"bits_per_byte/{s}") or 0.0 for s in slices]
        ax.bar(np.arange(len(slices)) + k * width, values, width, label=r.title)
    ax.set_xticks(np.arange(len(slices)) + 0.4 - width / 2, slices, rotation=20)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    image = save_figure(fig, plots / "bpb_by_language.png")
    return View("Bits per byte by language and domain", [header, *body], images=[image])
