"""Character and arithmetic probes (``probes``): seed 004's tasks, generated and measured, not hard-coded.

Five tasks, each generated from the eval's seed: letter counting ("how many r in strawberry"), spelling
(letters separated by spaces), string reversal, n-digit addition and multiplication. Words are real
words from the embedded held-out text. Each prompt is ``k_shot`` solved examples then the question, in
a ``Q: ... / A: ...`` format; the greedy answer up to the first newline must equal the gold answer
exactly. Accuracy per task with a 95% Wilson interval.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field

from archlab.config import Config
from archlab.evals.base import EvalContext, EvalResult, register_eval
from archlab.evals.lib.loglik import PrefixState, encode
from archlab.evals.lib.memorize import memorized, require_memorize
from archlab.evals.lib.stats import wilson_interval
from archlab.evals.lib.texts import corpus_documents
from archlab.evals.lib.views import EvalRun, View, cell, eval_view

Task = Literal["letter_count", "spelling", "reversal", "addition", "multiplication"]
ALL_TASKS: list[Task] = ["letter_count", "spelling", "reversal", "addition", "multiplication"]


class ProbeParams(Config):
    tasks: list[Task] = Field(ALL_TASKS, description="probe tasks to run")
    n_per_task: int = Field(50, ge=1, description="questions per task")
    k_shot: int = Field(3, ge=0, description="solved examples before each question")
    addition_digits: int = Field(3, ge=1, le=12, description="digits of each addend")
    multiplication_digits: int = Field(2, ge=1, le=6, description="digits of each factor")
    max_new_tokens: int | None = Field(None, ge=1, description="generation cap; default the gold answer's "
                                       "token count + 4")
    memorize: bool = Field(False, description="also answer after model.memorize(prompt); never the answer")


@lru_cache(maxsize=1)
def _words() -> tuple[str, ...]:
    text = " ".join(corpus_documents("wiki"))
    return tuple(sorted({w.lower() for w in re.findall(r"\b[A-Za-z]{4,10}\b", text)}))


def letter_count(rng: random.Random, _: ProbeParams) -> tuple[str, str]:
    word = rng.choice(_words())
    letter = rng.choice(word) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
    return f"How many times does the letter '{letter}' appear in '{word}'?", str(word.count(letter))


def spelling(rng: random.Random, _: ProbeParams) -> tuple[str, str]:
    word = rng.choice(_words())
    return f"Spell the word '{word}' letter by letter.", " ".join(word)


def reversal(rng: random.Random, _: ProbeParams) -> tuple[str, str]:
    word = rng.choice(_words())
    return f"Reverse the string '{word}'.", word[::-1]


def _number(rng: random.Random, digits: int) -> int:
    return rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits)


def addition(rng: random.Random, params: ProbeParams) -> tuple[str, str]:
    a, b = _number(rng, params.addition_digits), _number(rng, params.addition_digits)
    return f"What is {a} + {b}?", str(a + b)


def multiplication(rng: random.Random, params: ProbeParams) -> tuple[str, str]:
    a, b = _number(rng, params.multiplication_digits), _number(rng, params.multiplication_digits)
    return f"What is {a} * {b}?", str(a * b)


GENERATORS: dict[str, Callable[[random.Random, ProbeParams], tuple[str, str]]] = {
    "letter_count": letter_count, "spelling": spelling, "reversal": reversal,
    "addition": addition, "multiplication": multiplication,
}


def build_prompt(task: str, rng: random.Random, params: ProbeParams) -> tuple[str, str]:
    """k solved examples then the question; returns (prompt, gold answer)."""
    shots = [GENERATORS[task](rng, params) for _ in range(params.k_shot)]
    question, gold = GENERATORS[task](rng, params)
    lines = [f"Q: {q}\nA: {a}\n\n" for q, a in shots]
    return "".join(lines) + f"Q: {question}\nA:", gold


@lru_cache(maxsize=8)
def _newline_ids(tok) -> frozenset[int]:
    """Token ids whose text contains a newline: generation stops at the first one."""
    return frozenset(i for i in range(len(tok)) if "\n" in tok.decode([i]))


def answer(ctx: EvalContext, prompt: str, gold: str, params: ProbeParams, memorize: bool) -> str:
    """The greedy completion of ``prompt`` up to its first newline, stripped."""
    tok = ctx.tokenizer
    ids = encode(tok, prompt)
    budget = params.max_new_tokens or len(tok.encode(" " + gold, add_special_tokens=False)) + 4
    stop = set(_newline_ids(tok)) | ({tok.eos_token_id} if tok.eos_token_id is not None else set())
    with memorized(ctx.model, ids if memorize else None):
        generated = PrefixState(ctx.model, ids).greedy(budget, stop)
    return tok.decode(generated, skip_special_tokens=True).split("\n")[0].strip()


@register_eval("probes", ProbeParams, metrics=("accuracy*",))
def probes(ctx: EvalContext, params: ProbeParams) -> EvalResult:
    """Letter counting, spelling, reversal, addition, multiplication: exact match of the greedy answer."""
    if params.memorize:
        require_memorize(ctx.model, "probes")
    metrics: dict[str, float | None] = {}
    ci95: dict[str, tuple[float, float]] = {}
    items = []
    suffixes = ["", "_memorize"] if params.memorize else [""]
    for task in params.tasks:
        rng = random.Random(f"{ctx.seed}:{task}")
        rows = []
        for i in range(params.n_per_task):
            prompt, gold = build_prompt(task, rng, params)
            row = {"task": task, "index": i, "question": prompt.rsplit("Q: ", 1)[-1], "gold": gold}
            for suffix in suffixes:
                got = answer(ctx, prompt, gold, params, memorize=bool(suffix))
                row[f"answer{suffix}"], row[f"correct{suffix}"] = got, got == gold
            rows.append(row)
        items += rows
        for suffix in suffixes:
            hits = sum(r[f"correct{suffix}"] for r in rows)
            metrics[f"accuracy{suffix}/{task}"] = hits / len(rows)
            ci95[f"accuracy{suffix}/{task}"] = wilson_interval(hits, len(rows))
    for suffix in suffixes:
        hits = sum(r[f"correct{suffix}"] for r in items)
        metrics[f"accuracy{suffix}"] = hits / len(items)
        ci95[f"accuracy{suffix}"] = wilson_interval(hits, len(items))
    return EvalResult(
        metrics=metrics,
        n=len(items),
        ci95=ci95,
        headline="accuracy",
        details={"tasks": list(params.tasks), "k_shot": params.k_shot, "n_per_task": params.n_per_task,
                 "format": "Q: <question>\\nA: <answer>, greedy answer up to the first newline, exact match"},
        items=items,
    )


@eval_view("probes", order=70)
def probes_view(runs: list[EvalRun], plots: Path) -> View:
    """Character and arithmetic probes: accuracy overall and per task."""
    tasks = runs[0].details["tasks"]
    keys = ["accuracy", *[f"accuracy/{t}" for t in tasks]]
    header = ["Variant", "n", "all", *tasks]
    body = [[r.title, str(r.payload["n"]), *[cell(r.payload, k) for k in keys]] for r in runs]
    return View("Character and arithmetic probes", [header, *body])
