"""Passkey retrieval (``passkey``): the classic repeated-filler prompt with a 5-digit key at a random depth.

The template is the landmark-attention one (Mohtashami & Jaggi 2023, reused by LongLoRA and others): a
task line, "The grass is green. The sky is blue. ..." repeated, "The pass key is N. Remember it. N is the pass key." at a random filler
boundary, more filler, then "What is the pass key? The pass key is". Lengths are exact in the model's
tokens; scored by exact match of the greedy digits (and, cheaply, the rank of the key among random
5-digit distractors), with a 95% interval per length.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

from pydantic import Field

from archlab.config import Config
from archlab.data import leading_special_ids
from archlab.errors import ArchlabError
from archlab.evals.base import EvalContext, EvalResult, register_eval
from archlab.evals.lib.memorize import require_memorize
from archlab.evals.lib.retrieval import (
    UnscorableLength,
    distractor_keys,
    ids,
    random_key,
    score_with_and_without_memory,
    split_summary,
    summarize,
)
from archlab.evals.lib.views import EvalRun, View, cell, eval_view

TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
        "I will quiz you about the important information there.")
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY_LINE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"


class PasskeyParams(Config):
    lengths: list[Annotated[int, Field(ge=1)]] = Field([256, 512, 1024], min_length=1,
                                                      description="prompt lengths in the model's tokens (exact)")
    n_per_length: int = Field(20, ge=1, description="samples per length, each at a uniformly random depth")
    n_distractors: int = Field(20, ge=0, description="random 5-digit keys the passkey is ranked against")
    memorize: bool = Field(False, description="also score after model.memorize(prompt); never the answer")


def build_prompt(tok, length: int, key: str, rng: random.Random) -> tuple[list[int], float]:
    """Exactly ``length`` tokens with the key line after a random number of filler units."""
    head = leading_special_ids(tok) + ids(tok, TASK)
    key_line, question, unit = ids(tok, KEY_LINE.format(key=key)), ids(tok, QUESTION), ids(tok, FILLER)
    budget = length - len(head) - len(key_line) - len(question)
    if budget < len(unit):
        raise ArchlabError(f"passkey: length {length} is too short for the template (needs more than "
                           f"{length - budget + len(unit)} tokens)")
    units = -(-budget // len(unit))
    filler = (unit * units)[:budget]
    cut = rng.randint(0, budget // len(unit)) * len(unit)  # a filler-unit boundary
    prompt = head + filler[:cut] + key_line + filler[cut:] + question
    return prompt, cut / budget


@register_eval("passkey", PasskeyParams, metrics=("exact_match*", "rank_accuracy*", "mrr*"))
def passkey(ctx: EvalContext, params: PasskeyParams) -> EvalResult:
    """Passkey retrieval in repeated filler: exact match of the 5-digit key per length, with intervals."""
    if params.memorize:
        require_memorize(ctx.model, "passkey")
    tok, rng = ctx.tokenizer, random.Random(ctx.seed)
    answer_tokens = len(ids(tok, " 99999")) + 2
    items, per_length, failed = [], {}, {}
    for length in params.lengths:
        rows = []
        for sample in range(params.n_per_length):
            key = random_key(rng, 5)
            prompt, depth = build_prompt(tok, length, key, rng)
            distractors = distractor_keys(rng, key, params.n_distractors)
            row = {"length": length, "sample": sample, "key": key, "tokens": len(prompt), "depth": round(depth, 4)}
            try:
                row.update(score_with_and_without_memory(ctx, prompt, key, distractors, answer_tokens,
                                                         params.memorize))
            except UnscorableLength as exc:
                failed[length] = str(exc)
                break
            rows.append(row)
        if length in failed:
            break
        items += rows
        per_length[length] = summarize(rows)
        if params.memorize:
            per_length[length].update(summarize(rows, "_memorize"))
    if not items:
        raise ArchlabError(f"passkey: no length could be scored ({'; '.join(f'{k}: {v}' for k, v in failed.items())})")
    overall = summarize(items)
    if params.memorize:
        overall.update(summarize(items, "_memorize"))
    metrics, ci95 = split_summary(overall)
    for length, summary in per_length.items():
        m, c = split_summary(summary)
        metrics[f"exact_match@{length}"] = m["exact_match"]
        ci95[f"exact_match@{length}"] = c["exact_match"]
    if params.n_distractors == 0:
        metrics = {k: v for k, v in metrics.items() if not k.startswith(("rank_accuracy", "mrr"))}
        ci95 = {k: v for k, v in ci95.items() if not k.startswith("rank_accuracy")}
    return EvalResult(
        metrics=metrics,
        n=len(items),
        ci95=ci95,
        headline="exact_match",
        details={"per_length": {str(k): split_summary(v)[0] for k, v in per_length.items()},
                 "failed_lengths": failed, "template": "landmark-attention passkey (filler x N, key at random depth)",
                 "length_unit": f"tokens of the model's tokenizer ({type(tok).__name__}, vocab {len(tok)})"},
        items=items,
    )


@eval_view("passkey", order=40)
def passkey_view(runs: list[EvalRun], plots: Path) -> View:
    """Passkey retrieval: exact match overall and per length, with intervals."""
    lengths = sorted({int(k) for r in runs for k in r.details.get("per_length", {})})
    header = ["Variant", "n", "exact match", *[f"@{n}" for n in lengths]]
    body = [[r.title, str(r.payload["n"]), cell(r.payload, "exact_match"),
             *[cell(r.payload, f"exact_match@{n}", 2) for n in lengths]] for r in runs]
    return View("Passkey retrieval", [header, *body])
