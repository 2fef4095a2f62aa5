"""train.report_to: TensorBoard event files, W&B offline files and an MLflow SQLite store, each read back."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3

import pytest
from tests.conftest import TINY_MODEL

pytestmark = pytest.mark.slow  # trains a tiny run with the trackers on

INSTALLED = [t for t, m in (("tensorboard", "tensorboard"), ("wandb", "wandb"), ("mlflow", "mlflow"))
             if importlib.util.find_spec(m) is not None]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, corpus_dir):
    from archlab.plan import RunConfig, RunSpec, RunStore
    from archlab.plan.executor import run_local

    if not INSTALLED:
        pytest.skip("no tracker installed (pip install tensorboard wandb mlflow-skinny)")
    root = tmp_path_factory.mktemp("trackers")
    config = RunConfig.parse({
        "model": {"config": dict(TINY_MODEL)},
        "data": {"source": str(corpus_dir), "tokenizer": "bytes", "block_size": 32},
        "train": {"max_steps": 4, "per_device_train_batch_size": 4, "logging_steps": 1, "report_to": INSTALLED},
        "eval": [],
    }, where="test")
    old = {k: os.environ.pop(k, None) for k in ("WANDB_MODE", "WANDB_API_KEY", "MLFLOW_TRACKING_URI")}
    os.environ["WANDB_SILENT"] = "true"
    try:
        [outcome] = run_local([RunSpec("tracked", {}, config, ["t"])], RunStore(root, "plan"))
    finally:
        for key, value in old.items():
            if value is not None:
                os.environ[key] = value
    assert outcome.status == "done", outcome.message
    return root / "plan" / "tracked"


def test_tensorboard_event_files_hold_the_logged_loss(tracked_run):
    if "tensorboard" not in INSTALLED:
        pytest.skip("tensorboard is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((tracked_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "loss" in acc.Tags()["scalars"]
    losses = [e.value for e in acc.Scalars("loss")]
    logged = [r["loss"] for r in map(json.loads, (tracked_run / "metrics.jsonl").read_text().splitlines())
              if "loss" in r]
    assert [e.step for e in acc.Scalars("loss")] == [1, 2, 3, 4]
    assert losses == pytest.approx(logged, rel=1e-5)


def test_wandb_writes_an_offline_run_without_network(tracked_run):
    if "wandb" not in INSTALLED:
        pytest.skip("wandb is not installed")
    [record] = list((tracked_run / "wandb").glob("offline-run-*/run-*.wandb"))  # what `wandb sync` uploads
    data = record.read_bytes()
    assert data.startswith(b":W&B")
    logged = [json.loads(line) for line in (tracked_run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logged if "loss" in r]
    # history items are protobuf records holding the key and the value as JSON text
    assert len(losses) == 4 and all(b"loss" in data and repr(v).encode() in data for v in losses)


def test_mlflow_logs_to_a_local_sqlite_store(tracked_run):
    if "mlflow" not in INSTALLED:
        pytest.skip("mlflow is not installed")
    db = tracked_run.parent / "mlflow.db"
    with sqlite3.connect(db) as con:
        names = {r[0] for r in con.execute("select name from runs")}
        steps = [r[0] for r in con.execute("select step from metrics where key = 'loss' order by step")]
    assert "tracked" in names and steps == [1, 2, 3, 4]
