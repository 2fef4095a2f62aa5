"""Needle in a haystack (``niah``): a key sentence hidden in real text, over a length x depth grid.

Unlike seed 003's harness (kmccleary3301/nested_learning) the haystack is real held-out text from the embedded
corpus, a nominal length is the real length in the model's tokens, the key is ranked against at least
20 distractors (not one), exact match of the greedy answer is reported beside it, and every cell has
``n_per_cell`` samples with a 95% Wilson interval. ``memorize: true`` memorizes the prompt only (the
answer is never shown) and reports both numbers.
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator

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
from archlab.evals.lib.texts import corpus_sentences, embedded_corpus_name
from archlab.evals.lib.views import EvalRun, View, cell, eval_view, fmt, plot_file, pyplot, save_figure

NEEDLE = " The secret key is {key}. Remember it."
QUESTION = "\n\nWhat is the secret key in the text above? The secret key is"


class NIAHParams(Config):
    lengths: list[Annotated[int, Field(ge=1)]] = Field([256, 512, 1024], min_length=1,
                                                      description="prompt lengths in the model's tokens (exact)")
    depths: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field([0.0, 0.25, 0.5, 0.75, 1.0], min_length=1,
                                                                  description="needle position, 0 = start, 1 = end")
    n_per_cell: int = Field(10, ge=1, description="samples per (length, depth) cell")
    n_distractors: int = Field(20, ge=20, description="random keys the true key is ranked against")
    key_digits: int = Field(6, ge=2, le=12, description="digits of the random key")
    haystack: str = Field("wiki", description="embedded corpus whose held-out sentences are the haystack")

    _known_haystack = field_validator("haystack")(embedded_corpus_name)
    memorize: bool = Field(False, description="also score after model.memorize(prompt); never the answer")


@lru_cache(maxsize=4)
def _encoded_sentences(tok, corpus: str) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(ids(tok, " " + s)) for s in corpus_sentences(corpus))


def build_prompt(tok, sentences: tuple[tuple[int, ...], ...], length: int, depth: float, key: str,
                 rng: random.Random) -> tuple[list[int], float]:
    """Exactly ``length`` tokens: haystack sentences from a random start, the needle at a sentence
    boundary nearest ``depth``, the question last. Returns the ids and the needle's real depth."""
    head, needle, question = leading_special_ids(tok), ids(tok, NEEDLE.format(key=key)), ids(tok, QUESTION)
    budget = length - len(head) - len(needle) - len(question)
    if budget < 8:
        raise ArchlabError(f"niah: length {length} leaves no room for a haystack (needle + question take "
                           f"{length - budget} tokens); use longer lengths")
    chunks, total, at = [], 0, rng.randrange(len(sentences))
    while total < budget:  # cycle through the corpus from a random sentence
        chunks.append(list(sentences[at % len(sentences)]))
        total += len(chunks[-1])
        at += 1
    chunks[-1] = chunks[-1][: len(chunks[-1]) - (total - budget)]
    bounds = [0]
    for chunk in chunks:
        bounds.append(bounds[-1] + len(chunk))
    target = depth * budget
    at = bounds[min(range(len(chunks) + 1), key=lambda i: abs(bounds[i] - target))]
    hay = [t for chunk in chunks for t in chunk]
    if abs(at - target) > 0.05 * budget:  # sentences too coarse for this length: use a word boundary
        at = _word_boundary_near(tok, hay, round(target))
    prompt = head + hay[:at] + needle + hay[at:] + question
    return prompt, at / budget


def _word_boundary_near(tok, hay: list[int], target: int) -> int:
    """The position nearest ``target`` whose token starts a word (0 and len(hay) always qualify)."""
    for offset in range(len(hay) + 1):
        for at in (target - offset, target + offset):
            if at in (0, len(hay)) or (0 < at < len(hay) and tok.decode([hay[at]]).startswith(" ")):
                return at
    return target


@register_eval("niah", NIAHParams, metrics=("exact_match*", "rank_accuracy*", "mrr*"))
def needle_in_a_haystack(ctx: EvalContext, params: NIAHParams) -> EvalResult:
    """Needle in a haystack over lengths x depths: exact match and rank among >= 20 distractor keys."""
    if params.memorize:
        require_memorize(ctx.model, "niah")
    tok, rng = ctx.tokenizer, random.Random(ctx.seed)
    sentences = _encoded_sentences(tok, params.haystack)
    answer_tokens = len(ids(tok, " " + "9" * params.key_digits)) + 2
    items, grid, failed = [], [], {}
    for length in params.lengths:
        for depth in params.depths:
            rows = []
            for sample in range(params.n_per_cell):
                key = random_key(rng, params.key_digits)
                distractors = distractor_keys(rng, key, params.n_distractors)
                prompt, real_depth = build_prompt(tok, sentences, length, depth, key, rng)
                row = {"length": length, "depth": depth, "sample": sample, "key": key,
                       "tokens": len(prompt), "needle_depth": round(real_depth, 4)}
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
            cell = {"length": length, "depth": depth, "n": len(rows),
                    "tokens": sum(r["tokens"] for r in rows) / len(rows), **summarize(rows)}
            if params.memorize:
                cell.update(summarize(rows, "_memorize"))
            grid.append(cell)
    if not items:
        raise ArchlabError(f"niah: no length could be scored ({'; '.join(f'{k}: {v}' for k, v in failed.items())})")
    overall = summarize(items)
    if params.memorize:
        overall.update(summarize(items, "_memorize"))
    metrics, ci95 = split_summary(overall)
    for length in sorted({c["length"] for c in grid}):
        at_length = [r for r in items if r["length"] == length]
        metrics[f"exact_match@{length}"] = summarize(at_length)["exact_match"]
        metrics[f"rank_accuracy@{length}"] = summarize(at_length)["rank_accuracy"]
    return EvalResult(
        metrics=metrics,
        n=len(items),
        ci95=ci95,
        headline="rank_accuracy",
        details={"grid": grid, "haystack": f"embedded:{params.haystack} held-out sentences",
                 "chance_rank_accuracy": 1 / (params.n_distractors + 1), "failed_lengths": failed,
                 "length_unit": f"tokens of the model's tokenizer ({type(tok).__name__}, vocab {len(tok)})"},
        items=items,
    )


@eval_view("niah", order=30)
def niah_view(runs: list[EvalRun], plots: Path) -> View:
    """Needle in a haystack: rank accuracy and exact match per length, and a depth x length heatmap per run."""
    lengths = sorted({c["length"] for r in runs for c in r.details["grid"]})
    header = ["Variant", "n", "rank acc", "exact match", *[f"rank acc @{n}" for n in lengths], "chance"]
    body, images = [], []
    for r in runs:
        p = r.payload
        body.append([r.title, str(p["n"]), cell(p, "rank_accuracy"), cell(p, "exact_match"),
                     *[fmt(r.metrics.get(f"rank_accuracy@{n}"), 3) for n in lengths],
                     fmt(r.details.get("chance_rank_accuracy"), 3)])
        images.append(niah_heatmap(r.details["grid"], plot_file(plots, "niah", r.id), r.title))
    return View("Needle in a haystack", [header, *body], images=images)


def niah_heatmap(grid: list[dict], path: Path, title: str, metric: str = "rank_accuracy") -> Path:
    """Depth (rows) x length (columns) heatmap of one run's NIAH grid."""
    import numpy as np

    plt = pyplot()
    lengths = sorted({c["length"] for c in grid})
    depths = sorted({c["depth"] for c in grid})
    values = np.full((len(depths), len(lengths)), np.nan)
    for c in grid:
        if c.get(metric) is not None:
            values[depths.index(c["depth"]), lengths.index(c["length"])] = c[metric]
    fig, ax = plt.subplots(figsize=(1.2 * len(lengths) + 2.5, 0.6 * len(depths) + 1.8))
    image = ax.imshow(values, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(f"NIAH {metric}: {title}", fontsize=9)
    fig.colorbar(image, ax=ax)
    return save_figure(fig, path)
