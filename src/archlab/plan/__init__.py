"""Plans: schema, matrix expansion, run ids, the run store and executors."""

from __future__ import annotations

from pathlib import Path

from archlab.config import load_yaml
from archlab.plan.expand import RunSpec, expand, find_baseline, varied_keys
from archlab.plan.schema import PlanConfig, RunConfig
from archlab.plan.store import RunDir, RunStore


def load_plan(path: str | Path) -> PlanConfig:
    return PlanConfig.parse(load_yaml(path), where=str(path))


__all__ = ["PlanConfig", "RunConfig", "RunDir", "RunSpec", "RunStore", "expand", "find_baseline", "load_plan",
           "varied_keys"]
