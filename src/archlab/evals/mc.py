"""Multiple choice (``mc``) with lm-evaluation-harness conventions, so the numbers compare with lm-eval's.

Each choice is scored by the summed log-probability of its continuation given the context (never of the
whole text, never with the answer memorized): ``acc`` takes the argmax, ``acc_norm`` the argmax of the
sum divided by the choice's length in characters, as lm-eval does. The context is run once per
question and every choice is scored from its cache (``scoring: cached``); ``scoring: full`` runs one
row per choice exactly like lm-eval's HFLM, for checking.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from archlab.config import Config
from archlab.evals.base import EvalContext, EvalResult, register_eval
from archlab.evals.lib.loglik import (
    PrefixState,
    Scored,
    encode_pair,
    model_max_length,
    score_contexts_batched,
    score_full,
)
from archlab.evals.lib.mc_tasks import MCDoc, MCTask, check_task, load_task, task_code_file
from archlab.evals.lib.memorize import memorized, require_memorize
from archlab.evals.lib.stats import wilson_interval
from archlab.evals.lib.views import EvalRun, View, cell, eval_view, fmt


class MCParams(Config):
    task: str = Field("mmlu_dev", description="mmlu_dev (embedded, 282 questions), cloze[:corpus], a .jsonl of "
                      "{context, choices, gold}, an lm-eval task YAML, or an lm-eval task name (needs the hub)")
    tasks: list[str] | None = Field(None, min_length=1, description="several tasks (each as `task`) in one eval: "
                                    "per-task metrics acc@<task>, acc_norm@<task> (…_memorize@<task>), one report "
                                    "column each; acc / acc_norm are then their unweighted mean over the tasks")
    limit: int | None = Field(None, ge=1, description="score only the first N questions (of each task)")
    num_fewshot: int = Field(0, ge=0, description="k-shot examples: the first k other questions of the same subject, "
                             "after the subject header, as lm-eval's MMLU")
    target_delimiter: str = Field(" ", description="text between context and choice (lm-eval's default)")
    scoring: Literal["cached", "full"] = Field("cached", description="cached: context once per question; "
                                               "full: one row per choice, as lm-eval's HFLM")
    max_length: int | None = Field(None, ge=2, description="context window; default the model's "
                                   "max_position_embeddings (else 2048), left-truncating like lm-eval")
    batch_size: int = Field(32, ge=1, description="questions per forward pass (cached) or rows (full)")
    memorize: bool = Field(False, description="also score after model.memorize(context) (context tokens only)")
    cloze_items: int = Field(200, ge=1, description="cloze: questions generated")
    cloze_choices: int = Field(4, ge=2, description="cloze: sentences to choose from")
    cloze_context_sentences: int = Field(2, ge=1, description="cloze: preceding sentences given as context")
    allow_code: bool = Field(False, description="let a local lm-eval task YAML import Python ('!function'); "
                             "the plan then runs code from the task's folder")

    @model_validator(mode="after")
    def _code_needs_consent(self) -> MCParams:
        if self.tasks is not None and "task" in self.model_fields_set:
            raise ValueError("give either task (one) or tasks (several), not both")
        if self.tasks is not None and len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks lists a task twice: {self.tasks}")
        for spec in self.task_list():
            code = None if self.allow_code else task_code_file(spec)
            if code is not None:
                raise ValueError(f"{code} uses '!function', which imports Python from its folder; set allow_code: "
                                 f"true on this eval if you trust that code")
        return self

    def task_list(self) -> list[str]:
        return list(self.tasks) if self.tasks is not None else [self.task]

    def check_before_training(self) -> None:
        """``archlab plan``'s check of every task (files exist and parse, an lm-eval name needs the hub)."""
        for spec in self.task_list():
            check_task(spec)


def _encode(ctx: EvalContext, docs: list[MCDoc]) -> list[list[tuple[list[int], list[int]]]]:
    return [[encode_pair(ctx.tokenizer, c, cont) for c, cont in doc.requests] for doc in docs]


def score_docs(ctx: EvalContext, docs: list[MCDoc], params: MCParams, memorize: bool) -> list[list[Scored]]:
    """Log-likelihood of every request of every doc, grouped by doc."""
    encoded = _encode(ctx, docs)
    max_length = params.max_length or model_max_length(ctx.model)
    if params.scoring == "full" and not memorize:
        flat = [pair for doc in encoded for pair in doc]
        scores = iter(score_full(ctx.model, flat, max_length, params.batch_size))
        return [[next(scores) for _ in doc] for doc in encoded]
    groups = []  # (doc index, request indices, shared context ids)
    for d, pairs in enumerate(encoded):
        by_context: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (c, _) in enumerate(pairs):
            by_context[tuple(c)].append(i)
        groups += [(d, members, list(c)) for c, members in by_context.items()]
    out: list[list[Scored | None]] = [[None] * len(pairs) for pairs in encoded]
    pending = []
    for d, members, context in groups:
        conts = [encoded[d][i][1] for i in members]
        if memorize or len(context) + max(map(len, conts)) - 1 > max_length:
            with memorized(ctx.model, context if memorize else None):
                too_long = len(context) + max(map(len, conts)) - 1 > max_length
                results = (score_full(ctx.model, [encoded[d][i] for i in members], max_length, params.batch_size)
                           if too_long else PrefixState(ctx.model, context).score(conts))
            for i, r in zip(members, results, strict=True):
                out[d][i] = r
        else:
            pending.append((d, members, context, conts))
    _score_batched(ctx, pending, out, params.batch_size)
    return out  # type: ignore[return-value]


def _score_batched(ctx: EvalContext, pending: list, out: list, batch_size: int) -> None:
    """Questions ``batch_size`` at a time (contexts of similar length together); the first batch is
    checked against one-at-a-time scoring, and a model that fails the check is scored one at a time."""
    pending = sorted(pending, key=lambda g: len(g[2]))
    batched_ok = None
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        results = None
        if batched_ok is not False:
            results = score_contexts_batched(ctx.model, [(c, conts) for _, _, c, conts in chunk])
            if batched_ok is None and results is not None:
                # the shortest context carries the most padding: the strictest check
                reference = PrefixState(ctx.model, chunk[0][2]).score(chunk[0][3])
                batched_ok = all(abs(a.ll - b.ll) < 1e-3 for a, b in zip(results[0], reference, strict=True))
                results = results if batched_ok else None
        if results is None:
            batched_ok = False
            results = [PrefixState(ctx.model, c).score(conts) for _, _, c, conts in chunk]
        for (d, members, _, _), scored in zip(chunk, results, strict=True):
            for i, r in zip(members, scored, strict=True):
                out[d][i] = r


def doc_metrics(task: MCTask, doc: MCDoc, scores: list[Scored]) -> dict[str, float | int]:
    """acc / acc_norm of one question, by lm-eval's own process_results when the task came from lm-eval."""
    lls = np.array([s.ll for s in scores])
    if task.lm_eval_task is not None:
        res = task.lm_eval_task.process_results(doc.raw, [(s.ll, s.greedy) for s in scores])
        acc, acc_norm = float(res["acc"]), float(res.get("acc_norm", res["acc"]))
    else:
        lengths = np.array([float(len(c)) for c in doc.choices])
        acc = float(int(np.argmax(lls)) == doc.gold)
        acc_norm = float(int(np.argmax(lls / lengths)) == doc.gold)
    return {"acc": acc, "acc_norm": acc_norm, "pred": int(np.argmax(lls))}


@register_eval("mc", MCParams, metrics=("acc*", "gold_bits_per_byte*"))
def multiple_choice(ctx: EvalContext, params: MCParams) -> EvalResult:
    """Multiple-choice accuracy (acc, acc_norm) by continuation log-likelihood, lm-eval conventions."""
    if params.memorize:
        require_memorize(ctx.model, "mc")
    if params.tasks is None:
        return _one_task(ctx, params, params.task)
    results = [_one_task(ctx, params, spec) for spec in params.tasks]
    metrics: dict[str, float | None] = {}
    ci95: dict[str, tuple[float, float]] = {}
    items, labels = [], []
    for result in results:
        label = result.details["task"]
        labels.append(label)
        metrics.update({f"{k}@{label}": v for k, v in result.metrics.items()})
        ci95.update({f"{k}@{label}": v for k, v in result.ci95.items()})
        items += [{"task": label, **item} for item in result.items]
    for key in results[0].metrics:  # the unweighted mean over tasks, as lm-eval's group average of tasks
        values = [r.metrics.get(key) for r in results]
        metrics[key] = float(np.mean(values)) if all(v is not None for v in values) else None
    details = {"tasks": labels, "per_task": {r.details["task"]: r.details for r in results},
               "num_fewshot": params.num_fewshot, "scoring": params.scoring, "memorize": params.memorize,
               "chance": float(np.mean([r.details["chance"] for r in results if r.details["chance"] is not None]))
               if any(r.details["chance"] is not None for r in results) else None,
               "task_counts": {r.details["task"]: r.n for r in results},
               "normalisation": results[0].details["normalisation"],
               "mean": "acc / acc_norm without @task are the unweighted mean over the tasks"}
    return EvalResult(metrics=metrics, n=sum(r.n for r in results), ci95=ci95, headline="acc_norm",
                      details=details, items=items)


def _one_task(ctx: EvalContext, params: MCParams, spec: str) -> EvalResult:
    cloze = {"items": params.cloze_items, "choices": params.cloze_choices,
             "context_sentences": params.cloze_context_sentences}
    task = load_task(spec, limit=params.limit, num_fewshot=params.num_fewshot,
                     delimiter=params.target_delimiter, seed=ctx.seed, cloze=cloze)
    runs = {"": score_docs(ctx, task.docs, params, memorize=False)}
    if params.memorize:
        runs["_memorize"] = score_docs(ctx, task.docs, params, memorize=True)
    metrics: dict[str, float | None] = {}
    ci95: dict[str, tuple[float, float]] = {}
    items = [{"doc_id": d.doc_id, "gold": d.gold, "choice_chars": [len(c) for c in d.choices]} for d in task.docs]
    n = len(task.docs)
    for suffix, scores in runs.items():
        per_doc = [doc_metrics(task, d, s) for d, s in zip(task.docs, scores, strict=True)]
        for key in ("acc", "acc_norm"):
            hits = int(sum(m[key] for m in per_doc))
            metrics[key + suffix] = hits / max(n, 1)
            ci95[key + suffix] = wilson_interval(hits, n)
        gold = [(s[d.gold].ll, len(d.requests[d.gold][1].encode("utf-8")))
                for d, s in zip(task.docs, scores, strict=True) if 0 <= d.gold < len(s)]
        nbytes = sum(b for _, b in gold)
        # bits per byte of the gold continuation (delimiter included): a loss beside the accuracies
        metrics["gold_bits_per_byte" + suffix] = -sum(ll for ll, _ in gold) / math.log(2) / nbytes if nbytes else None
        for item, m, s in zip(items, per_doc, scores, strict=True):
            item.update({f"lls{suffix}": [round(x.ll, 6) for x in s], f"pred{suffix}": m["pred"],
                         f"acc{suffix}": m["acc"], f"acc_norm{suffix}": m["acc_norm"]})
    if params.memorize:
        metrics["acc_memorize_gain"] = metrics["acc_memorize"] - metrics["acc"]
    chance = float(np.mean([1 / len(d.choices) for d in task.docs])) if task.docs else None
    return EvalResult(
        metrics=metrics,
        n=n,
        ci95=ci95,
        headline="acc_norm",
        details={"task": task.name, "source": task.source, "num_fewshot": params.num_fewshot,
                 "scoring": params.scoring, "chance": chance, "memorize": params.memorize,
                 "normalisation": "acc_norm divides the summed log-likelihood by len(choice) in characters"},
        items=items,
    )


@eval_view("mc", order=20)
def mc_view(runs: list[EvalRun], plots: Path) -> View:
    """Multiple choice (zero-shot): acc and acc_norm with their intervals, and chance; one column per task."""
    if any(r.details.get("tasks") for r in runs):
        return _tasks_view(runs)
    memorize = any("acc_memorize" in r.metrics for r in runs)
    header = ["Variant", "Task", "n", "acc", "acc_norm", "chance"]
    header += ["acc (memorize)", "acc_norm (memorize)"] if memorize else []
    body = []
    for r in runs:
        p = r.payload
        line = [r.title, str(r.details.get("task")), str(p["n"]), cell(p, "acc"), cell(p, "acc_norm"),
                fmt(r.details.get("chance"), 3)]
        line += [cell(p, "acc_memorize"), cell(p, "acc_norm_memorize")] if memorize else []
        body.append(line)
    note = "Scored by continuation log-likelihood with lm-eval conventions (acc_norm: per character)."
    return View("Multiple choice (zero-shot)", [header, *body], note)


def _tasks_view(runs: list[EvalRun]) -> View:
    """Runs that scored several tasks: acc_norm per task (a single-task run fills its task's column)."""
    def keyed(r: EvalRun, task: str) -> str:
        return f"@{task}" if r.details.get("tasks") else ""

    tasks: list[str] = []
    for r in runs:
        for t in r.details.get("tasks") or [str(r.details.get("task"))]:
            tasks += [t] if t not in tasks else []
    memorize = any(k.startswith("acc_norm_memorize") for r in runs for k in r.metrics)
    header = ["Variant", *[f"{t} acc_norm" for t in tasks], "mean acc_norm"]
    header += [f"{t} acc_norm (memorize)" for t in tasks] if memorize else []
    body = []
    for r in runs:
        own = r.details.get("tasks") or [str(r.details.get("task"))]
        p = r.payload
        line = [r.title] + [cell(p, "acc_norm" + keyed(r, t)) if t in own else "—" for t in tasks]
        line.append(cell(p, "acc_norm"))
        if memorize:
            line += [cell(p, "acc_norm_memorize" + keyed(r, t)) if t in own else "—" for t in tasks]
        body.append(line)
    note = ("acc_norm per task (continuation log-likelihood per character, lm-eval conventions); the mean is "
            "unweighted over a run's tasks. acc and the memorize gains are in eval/mc.json.")
    return View("Multiple choice (zero-shot), per task", [header, *body], note)
