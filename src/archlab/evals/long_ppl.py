"""Long-document perplexity (``long_ppl``): sliding-window loss, perplexity and bits per byte.

PG-19-style: whole long documents, each truncated to ``max_tokens`` and scored with a sliding window of
``window`` tokens advancing by ``stride`` (every token scored once, with at least ``window - stride``
tokens of context). Offline the documents are the embedded held-out texts (whole plays for
``shakespeare``). The loss by position shows whether later tokens profit from longer context.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from archlab.config import Config
from archlab.errors import ArchlabError
from archlab.evals.base import EvalContext, EvalResult, register_eval
from archlab.evals.lib.ppl import default_window, encode_text, stream_loss, utf8_prefix
from archlab.evals.lib.texts import corpus_documents
from archlab.evals.lib.views import simple_view
from archlab.models.scoring import LossTotals

POSITION_EDGES = (0, 128, 512, 2048, 8192, 32768)


class LongPPLParams(Config):
    source: str = Field("shakespeare", description="embedded corpus (held-out documents) or a .txt file/folder")
    max_documents: int = Field(4, ge=1, description="documents scored")
    max_tokens: int = Field(4096, ge=2, description="truncation length of each document, in tokens")
    window: int | None = Field(None, ge=2, description="tokens per forward pass; default the model's max "
                               "length (at most 2048)")
    stride: int | None = Field(None, ge=1, description="new tokens scored per window; default window // 2")
    max_bytes: int | None = Field(None, ge=2, description="truncate each document to this many UTF-8 bytes before "
                                  "tokenizing, so models with different tokenizers score the same bytes")


def load_documents(source: str) -> list[tuple[str, str]]:
    """(name, text) pairs from an embedded corpus's held-out splits or from local .txt files."""
    path = Path(source).expanduser()
    if path.exists():
        files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
        if not files:
            raise ArchlabError(f"long_ppl: no .txt files under {source}")
        return [(f.name, f.read_text(encoding="utf-8")) for f in files]
    docs = corpus_documents(source)
    return [(f"{source}[{i}]", text) for i, text in enumerate(docs)]


@register_eval("long_ppl", LongPPLParams, metrics=("loss", "perplexity", "bits_per_byte"))
def long_document_perplexity(ctx: EvalContext, params: LongPPLParams) -> EvalResult:
    """Sliding-window perplexity and bits per byte over long documents, with loss by token position."""
    window = default_window(ctx, params.window)
    stride = params.stride or window // 2
    totals, items = LossTotals(), []
    by_position = torch.zeros(len(POSITION_EDGES)), torch.zeros(len(POSITION_EDGES))
    for name, text in load_documents(params.source)[: params.max_documents]:
        if params.max_bytes is not None:
            text = utf8_prefix(text, params.max_bytes)
        ids = encode_text(ctx.tokenizer, text)[: params.max_tokens]
        if len(ids) < 2:
            continue
        doc, nll = stream_loss(ctx, ids, window, stride)
        totals.add(doc)
        positions = torch.arange(1, len(ids))
        bucket = torch.bucketize(positions, torch.tensor(POSITION_EDGES[1:]), right=True)
        by_position[0].index_add_(0, bucket, nll)
        by_position[1].index_add_(0, bucket, torch.ones_like(nll))
        items.append({"document": name, "tokens": doc.tokens, "bytes": doc.bytes, "loss": doc.loss,
                      "perplexity": doc.perplexity, "bits_per_byte": doc.bits_per_byte})
    if not items:
        raise ArchlabError(f"long_ppl: no document in {params.source} has two or more tokens")
    curve = [{"from_token": POSITION_EDGES[i], "loss": float(by_position[0][i] / by_position[1][i]),
              "tokens": int(by_position[1][i])} for i in range(len(POSITION_EDGES)) if by_position[1][i] > 0]
    return EvalResult(
        metrics={"loss": totals.loss, "perplexity": totals.perplexity, "bits_per_byte": totals.bits_per_byte},
        n=totals.tokens,
        headline="bits_per_byte",
        details={"documents": len(items), "bytes": totals.bytes, "window": window, "stride": stride,
                 "max_tokens": params.max_tokens, "max_bytes": params.max_bytes, "source": params.source, "loss_by_position": curve},
        items=items,
    )


simple_view("long_ppl", "Long-document perplexity",
            [("perplexity", "perplexity"), ("bits/byte", "bits_per_byte"), ("loss", "loss")],
            details=("max_tokens", "window", "stride"), order=60)
