"""UNK's share of the scored targets: how closed a closed-vocabulary run is (seed 002's word-level data).

A perplexity on a 1000-word vocabulary where every other word is one UNK token is not comparable with an
ordinary WikiText-2 perplexity (word level over the full vocabulary, or BPE): predicting UNK is easy and it is
among the most frequent targets. This eval reports that share next to the loss, so a table shows it.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from archlab.config import Config
from archlab.errors import ArchlabError
from archlab.evals.base import EvalContext, EvalResult, register_eval
from archlab.evals.lib.stats import wilson_interval


class UnkShareParams(Config):
    split: Literal["train", "validation", "test"] = Field("validation", description="split whose targets are counted")


@register_eval("unk_share", UnkShareParams, metrics=("unk_share", "vocab_size"))
def unk_share(ctx: EvalContext, params: UnkShareParams) -> EvalResult:
    """Share of scored target tokens that are the tokenizer's UNK (word-level runs; 0 without an UNK)."""
    if ctx.data is None:
        raise ArchlabError("eval 'unk_share' needs the run's data")
    split = getattr(ctx.data, params.split)
    unk = ctx.tokenizer.unk_token_id
    targets = torch.cat([labels[1:] for labels in split.labels]) if len(split) else torch.empty(0, dtype=torch.long)
    targets = targets[targets != -100]
    hits = int((targets == unk).sum()) if unk is not None else 0
    n = int(targets.numel())
    return EvalResult(
        metrics={"unk_share": hits / max(n, 1), "vocab_size": float(len(ctx.tokenizer))},
        n=n,
        ci95={"unk_share": wilson_interval(hits, n)},
        headline="unk_share",
        details={"split": params.split, "unk_token": ctx.tokenizer.unk_token, "unk_targets": hits},
    )
