"""Test-time-learning telemetry (``inner_updates``): did the fast memories of a HOPE/TITAN run actually write?

Seed 003's surprise gate compared a threshold to a mean-reduced teach signal and, at full sequence length,
blocked essentially every inner update without anyone noticing. This eval makes that visible: it sums the
training-time counters the model logged (``inner/*`` in metrics.jsonl: tokens seen by the gate, tokens it
blocked, fast-memory writes applied and blocked) and measures the same counters on held-out text at the
evaluation teach scale. ``verdict`` says in words whether writes happened.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field, field_validator

from archlab.config import Config
from archlab.errors import ArchlabError
from archlab.evals.base import EvalContext, EvalResult, register_eval
from archlab.evals.lib.ppl import encode_text
from archlab.evals.lib.texts import corpus_documents, embedded_corpus_name
from archlab.evals.lib.views import EvalRun, View, eval_view, fmt

COUNTERS = ("gate_tokens", "gate_hit", "updates_applied", "updates_blocked")


class InnerUpdatesParams(Config):
    source: str = Field("shakespeare", description="embedded corpus whose held-out text is run at eval time")

    _known_source = field_validator("source")(embedded_corpus_name)
    tokens: int = Field(256, ge=2, description="held-out tokens run through the model")


def verdict(applied: float, blocked: float, gate_hit_rate: float) -> str:
    if applied + blocked == 0:
        return "no fast-memory write was due (no fast memory, or too few tokens)"
    if applied == 0:
        why = "the surprise gate blocked every token" if gate_hit_rate >= 1.0 else "teach_scale was 0"
        return f"every inner update was blocked ({why}): the fast memories never changed"
    return f"{applied / (applied + blocked):.0%} of the due fast-memory writes were applied"


def _rates(c: dict[str, float], prefix: str) -> dict[str, float]:
    writes = c["updates_applied"] + c["updates_blocked"]
    return {f"{prefix}gate_hit_rate": c["gate_hit"] / c["gate_tokens"] if c["gate_tokens"] else 0.0,
            f"{prefix}updates_applied": c["updates_applied"], f"{prefix}updates_blocked": c["updates_blocked"],
            f"{prefix}updates_applied_rate": c["updates_applied"] / writes if writes else 0.0}


@register_eval("inner_updates", InnerUpdatesParams, metrics=("train_*", "eval_*"))
def inner_updates(ctx: EvalContext, params: InnerUpdatesParams) -> EvalResult:
    """Fast-memory write telemetry (surprise gate hits, writes applied) in training and on held-out text."""
    model = ctx.model
    if not callable(getattr(model, "inner_telemetry", None)):
        raise ArchlabError(f"eval 'inner_updates': {type(model).__name__} has no fast memory (inner_telemetry); "
                           f"remove the eval from this run")
    train = dict.fromkeys(COUNTERS, 0.0)
    for record in ctx.run.metrics.read():
        for k in COUNTERS:
            train[k] += float(record.get(f"inner/{k}", 0.0))
    model.inner_telemetry(reset=True)  # drop counts from before this eval
    ids = encode_text(ctx.tokenizer, "\n\n".join(corpus_documents(params.source))[: 32 * params.tokens])
    ids = ids[: params.tokens]
    with torch.no_grad():
        model(input_ids=torch.tensor([ids], dtype=torch.long, device=ctx.device))
    tel = model.inner_telemetry(reset=True)
    ev = {k: tel[f"inner/{k}"] for k in COUNTERS}
    metrics = {**_rates(train, "train_"), **_rates(ev, "eval_")}
    details = {"train": train, "eval": ev, "eval_teach_scale": tel["inner/teach_scale"],
               "train_verdict": verdict(train["updates_applied"], train["updates_blocked"],
                                        metrics["train_gate_hit_rate"]),
               "eval_verdict": verdict(ev["updates_applied"], ev["updates_blocked"], metrics["eval_gate_hit_rate"])}
    return EvalResult(metrics=metrics, n=int(train["gate_tokens"] + ev["gate_tokens"]),
                      headline="train_updates_applied_rate", details=details)


@eval_view("inner_updates", order=90)
def inner_updates_view(runs: list[EvalRun], plots: Path) -> View:
    """Seed 003: did the fast memories write? Gate hits and writes applied, in training and at evaluation."""

    def count(run: EvalRun, key: str) -> str:
        value = run.metrics.get(key)
        return f"{int(value):,}" if isinstance(value, int | float) else "—"

    header = ["Variant", "train gate hit", "train writes applied", "train writes blocked", "eval gate hit",
              "eval writes applied", "verdict (training)"]
    body = [[run.title, fmt(run.metrics.get("train_gate_hit_rate"), 3), count(run, "train_updates_applied"),
             count(run, "train_updates_blocked"), fmt(run.metrics.get("eval_gate_hit_rate"), 3),
             count(run, "eval_updates_applied"), str(run.details.get("train_verdict", "—"))] for run in runs]
    return View("Inner updates (surprise gate and fast-memory writes)", [header, *body])
