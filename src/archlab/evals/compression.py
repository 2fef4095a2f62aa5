"""Compression (``compression``): bytes per patch for patching models, bytes per token for the rest.

The patching protocol (for byte-level models that group bytes into patches, BLT-style)::

    model.patch_lengths(input_ids: LongTensor[1, T]) -> LongTensor[P]
        The length in tokens of each patch the model forms over this sequence, in order; the lengths
        sum to T. Boundaries may depend only on the tokens themselves (e.g. an entropy model), never on
        tokens after the patch they close.

A model without ``patch_lengths`` is reported as one patch per token (so bytes per patch equals the
tokenizer's bytes per token), and the result says so.
"""

from __future__ import annotations

import torch
from pydantic import Field

from archlab.config import Config
from archlab.errors import ArchlabError
from archlab.evals.base import ANY_OBJECTIVE, EvalContext, EvalResult, register_eval
from archlab.evals.lib.ppl import byte_lengths, utf8_prefix
from archlab.evals.lib.texts import Slice, slice_text
from archlab.evals.lib.views import simple_view


class CompressionParams(Config):
    slices: list[Slice] = Field(["wiki", "code", "quran_zh"], description="held-out text slices to patch")
    max_bytes: int = Field(8000, ge=16, description="UTF-8 bytes per slice")
    chunk_tokens: int = Field(1024, ge=2, description="tokens per patch_lengths call")


def patch_lengths(ctx: EvalContext, ids: list[int], chunk: int) -> tuple[torch.Tensor, bool]:
    """Patch lengths over ``ids`` (chunk by chunk); ones when the model does not patch."""
    method = getattr(ctx.model, "patch_lengths", None)
    if not callable(method):
        return torch.ones(len(ids), dtype=torch.long), False
    parts = []
    for start in range(0, len(ids), chunk):
        piece = ids[start : start + chunk]
        with torch.no_grad():
            lengths = torch.as_tensor(method(torch.tensor([piece], device=ctx.device))).flatten().cpu().long()
        if int(lengths.sum()) != len(piece) or bool((lengths <= 0).any()):
            raise ArchlabError(f"compression: {type(ctx.model).__name__}.patch_lengths returned lengths summing "
                               f"to {int(lengths.sum())} for {len(piece)} tokens (they must be positive and sum "
                               f"to the sequence length)")
        parts.append(lengths)
    return torch.cat(parts), True


@register_eval("compression", CompressionParams, metrics=("bytes_per_patch*", "bytes_per_token"),
               objectives=ANY_OBJECTIVE)
def compression(ctx: EvalContext, params: CompressionParams) -> EvalResult:
    """Bytes per patch (and per token) of a patching model; bytes per token when the model has no patches."""
    sizes = byte_lengths(ctx.tokenizer)
    metrics: dict[str, float | None] = {}
    items, total_bytes, total_patches, total_tokens, patched = [], 0, 0, 0, False
    for name in params.slices:
        # the text's own tokens: a leading BOS would count as a token that packs no bytes
        ids = list(ctx.tokenizer.encode(utf8_prefix(slice_text(name), params.max_bytes), add_special_tokens=False))
        lengths, patched = patch_lengths(ctx, ids, params.chunk_tokens)
        n_bytes = int(sizes[torch.tensor(ids, dtype=torch.long)].sum())
        metrics[f"bytes_per_patch/{name}"] = n_bytes / len(lengths)
        items.append({"slice": name, "bytes": n_bytes, "tokens": len(ids), "patches": len(lengths),
                      "bytes_per_patch": n_bytes / len(lengths), "bytes_per_token": n_bytes / len(ids),
                      "max_patch_tokens": int(lengths.max())})
        total_bytes, total_patches, total_tokens = total_bytes + n_bytes, total_patches + len(lengths), \
            total_tokens + len(ids)
    metrics.update({"bytes_per_patch": total_bytes / total_patches, "bytes_per_token": total_bytes / total_tokens,
                    "tokens_per_patch": total_tokens / total_patches})
    note = ("patches from model.patch_lengths()" if patched else
            f"{type(ctx.model).__name__} has no patch_lengths(): one patch per token, so bytes_per_patch is "
            f"the tokenizer's bytes per token")
    return EvalResult(metrics=metrics, n=total_patches, headline="bytes_per_patch",
                      details={"patching": patched, "note": note, "slices": items}, items=items)


simple_view("compression", "Compression", [("bytes/patch", "bytes_per_patch"), ("bytes/token", "bytes_per_token")],
            order=90)
