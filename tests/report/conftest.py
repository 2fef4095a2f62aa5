"""A finished tiny plan for the report tests: two trained runs, one failed, one pending."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rich.console import Console
from tests.conftest import TINY_MODEL

TINY_PLAN = {
    "name": "tiny_report",
    "description": "Two trained runs, a failed one and a pending one, for the report tests.",
    "defaults": {
        "model": {"config": dict(TINY_MODEL)},
        "data": {"tokenizer": "bytes", "block_size": 32},
        "train": {"max_steps": 6, "per_device_train_batch_size": 4, "logging_steps": 2, "eval_steps": 3,
                  "save_steps": 100},
        "eval": [{"name": "loss", "max_examples": 16}, {"name": "generate_samples", "max_new_tokens": 8}],
    },
    "axes": {"pos": {"learned": {"model.config.position_embedding": "learned"},
                     "rope": {"model.config.position_embedding": "rope"},
                     "nope": {"model.config.position_embedding": "none"},
                     "wide": {"model.config.hidden_size": 64}}},
    "matrix": {"pos": ["learned", "rope", "nope", "wide"]},
    "baseline": {"pos": "learned"},
    "metrics": ["loss.loss", "loss.bits_per_byte", "loss.accuracy"],
    "headline": "loss.bits_per_byte",
}
FAILED_LINE = "RuntimeError: the tiny test run failed on purpose"


@pytest.fixture(scope="session")
def finished_plan(tmp_path_factory, corpus_dir) -> tuple[Path, Path]:
    """(plan file, runs dir) of TINY_PLAN with learned + rope trained, nope failed and wide pending."""
    from archlab.plan import RunStore, expand, load_plan
    from archlab.plan.executor import run_local
    from archlab.report import write_report

    root = tmp_path_factory.mktemp("tiny_report")
    plan_data = {**TINY_PLAN, "defaults": {**TINY_PLAN["defaults"],
                                          "data": {**TINY_PLAN["defaults"]["data"], "source": str(corpus_dir)}}}
    plan_file = root / "tiny_report.yaml"
    plan_file.write_text(yaml.safe_dump(plan_data))
    plan = load_plan(plan_file)
    specs = expand(plan, None, {})
    store = RunStore(root / "runs", plan.name)
    quiet = Console(file=open(root / "console.txt", "w"))  # noqa: SIM115
    run_local(specs[:2], store, quiet)
    failed = store.run(specs[2].id)
    failed.write_config(specs[2].config.to_dict())
    failed.record_error(f"Traceback (most recent call last):\n  File \"x.py\", line 1\n{FAILED_LINE}\n")
    failed.set_status("failed", message=f"{FAILED_LINE} (traceback in {failed.error_log})")
    write_report(plan, specs, store, None, quiet)
    return plan_file, root / "runs"
