"""The eval interface: a registered function ``(ctx, params) -> EvalResult`` that becomes eval/<name>.json.

An eval declares a pydantic ``Params`` model (unknown keys rejected like every config), reads what it
needs from ``EvalContext`` and returns metrics with ``n`` and 95% intervals. Per-item records go to a
sidecar ``eval/<name>.items.jsonl`` so the JSON stays small.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn
from transformers import PreTrainedTokenizerBase

from archlab.config import Config
from archlab.data import DataBundle
from archlab.registry import Registry
from archlab.rundir import RunDir


@dataclass
class EvalContext:
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    data: DataBundle | None
    run_dir: Path
    seed: int = 0
    batch_size: int = 8

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)


@dataclass
class EvalResult:
    metrics: dict[str, float | None]
    n: int
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    headline: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)


CAUSAL_LM = ("causal_lm",)
ANY_OBJECTIVE = ("causal_lm", "masked_diffusion")


@dataclass(frozen=True)
class EvalDef:
    fn: Callable[[EvalContext, Any], EvalResult]
    params: type[Config]
    objectives: tuple[str, ...] = CAUSAL_LM  # training objectives whose runs this eval can score
    metrics: tuple[str, ...] = ()  # names (fnmatch patterns) of the metrics it reports; () = not declared

    def gives(self, metric: str) -> bool:
        """Whether this eval reports ``metric`` (True when it did not declare its metrics)."""
        return not self.metrics or any(fnmatchcase(metric, pattern) for pattern in self.metrics)


EVALS: Registry[EvalDef] = Registry("eval")


def register_eval(name: str, params: type[Config], metrics: tuple[str, ...] = (),
                  objectives: tuple[str, ...] = CAUSAL_LM):
    """Register ``fn(ctx, params) -> EvalResult`` as ``name``.

    ``metrics`` lists the metric names it reports (fnmatch patterns such as ``exact_match@*``), so a plan naming
    another metric fails at plan time. ``objectives``: the runs it may score; next-token scoring (the default)
    would leak the targets to a model that sees the whole sequence (masked_diffusion runs).
    """

    def wrap(fn):
        EVALS.register(name, EvalDef(fn, params, objectives, tuple(metrics)),
                       help=(fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return wrap


def check_eval_objective(specs: list[EvalSpec], objective: str) -> None:
    """Raise ValueError naming the first eval that cannot score a run trained with ``objective``."""
    for spec in specs:
        if spec.name not in EVALS:
            continue  # an unknown name is reported where the eval list is validated
        allowed = EVALS.get(spec.name).objectives
        if objective not in allowed:
            fits = sorted(n for n in EVALS if objective in EVALS.get(n).objectives)
            why = ("next-token scoring would show it the very tokens it predicts (a bidirectional model sees "
                   "the whole sequence)" if objective == "masked_diffusion" else f"it scores {allowed[0]} runs")
            raise ValueError(f"eval '{spec.name}' cannot score a {objective} run: {why}; use one of {fits}")


class EvalSpec(Config):
    """One entry of a run's eval list: a registered eval name and its parameters."""

    name: str = Field(description="registered eval (see `archlab ls`)")
    params: dict[str, Any] = Field(default_factory=dict, description="parameters of that eval")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and "name" in value and "params" not in value:
            rest = {k: v for k, v in value.items() if k != "name"}
            return {"name": value["name"], "params": rest}
        return value


def run_eval(spec: EvalSpec, ctx: EvalContext) -> dict[str, Any]:
    """Run one eval and write eval/<name>.json atomically; returns the JSON payload."""
    definition = EVALS.get(spec.name)
    params = definition.params.parse(spec.params, where=f"eval '{spec.name}'")
    start = time.perf_counter()
    was_training = ctx.model.training
    ctx.model.eval()
    try:
        result = definition.fn(ctx, params)
    finally:
        ctx.model.train(was_training)
    payload = {
        "eval": spec.name,
        "params": params.to_dict(),
        "metrics": result.metrics,
        "headline": result.headline,
        "n": result.n,
        "ci95": {k: list(v) for k, v in result.ci95.items()},
        "details": result.details,
        "seconds": round(time.perf_counter() - start, 3),
    }
    ctx.run.write_eval(spec.name, payload, result.items)
    return payload

