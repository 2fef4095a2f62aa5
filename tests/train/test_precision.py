"""The mixed-precision rule: bf16 from Ampere on, fp16 + loss scaling on Volta/Turing (T4), fp32 otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from archlab.plan import expand, load_plan
from archlab.train.precision import precision_for, train_keys

GPUS = {"T4": (7, 5), "V100": (7, 0), "A100": (8, 0), "L4": (8, 9), "H100": (9, 0), "P100": (6, 0)}


@pytest.mark.parametrize(("gpu", "want"), [("T4", "fp16"), ("V100", "fp16"), ("A100", "bf16"), ("L4", "bf16"),
                                           ("H100", "bf16"), ("P100", "no")])
def test_precision_by_compute_capability(gpu, want):
    assert precision_for(GPUS[gpu]) == want
    assert precision_for(None) == "no"


def test_seed_000s_full_profile_follows_the_rule_for_its_t4s():
    plan = load_plan(Path(__file__).resolve().parents[2] / "plans" / "titanesque_v2.yaml")
    specs = expand(plan, "full")
    assert specs and all({"bf16": s.config.train.bf16, "fp16": s.config.train.fp16} == train_keys(precision_for(GPUS["T4"]))
                         for s in specs)
