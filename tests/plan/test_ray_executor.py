from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import tiny_run_config

from archlab.plan import PlanConfig, RunStore, expand
from archlab.plan.executor import run_local, run_ray
from archlab.train import Callback

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_executor_runs_each_run_as_a_task_and_matches_local(tmp_path, corpus_dir):
    plan = PlanConfig.parse({"name": "r", "defaults": tiny_run_config(corpus_dir), "matrix": {"train.seed": [1, 2]}})
    specs = expand(plan)
    local = run_local(specs, RunStore(tmp_path / "local", "r"))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        remote = run_ray(specs, RunStore(tmp_path / "ray", "r"))
        again = run_ray(specs, RunStore(tmp_path / "ray", "r"))
    finally:
        ray.shutdown()
    assert [o.status for o in local] == [o.status for o in remote] == ["done", "done"]
    assert [o.message for o in again] == ["already done", "already done"]
    for spec in specs:
        a = load_file(tmp_path / "local" / "r" / spec.id / "model" / "model.safetensors")
        b = load_file(tmp_path / "ray" / "r" / spec.id / "model" / "model.safetensors")
        for key in a:  # ray pins each task to one thread, so sums may round differently
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


class DieOnce(Callback):
    """SIGKILLs its Ray worker at ``step`` the first time only (a marker file remembers)."""

    def __init__(self, marker: str, step: int):
        self.marker, self.step = marker, step

    def on_step_end(self, trainer):
        import os
        import signal
        from pathlib import Path

        if trainer.state.step == self.step and not Path(self.marker).exists():
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_ray_worker_killed_mid_run_is_retried_and_resumes_from_its_checkpoint(tmp_path, corpus_dir):
    import json

    from tests.conftest import subprocess_env

    plan = PlanConfig.parse({"name": "k", "defaults": tiny_run_config(corpus_dir, max_steps=6, save_steps=2,
                                                                      logging_steps=1),
                             "matrix": {"train.seed": [1]}})
    specs = expand(plan)
    env = {k: v for k, v in subprocess_env(OMP_NUM_THREADS="1").items() if k in ("PYTHONPATH", "OMP_NUM_THREADS")}
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this test module
    try:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
        [outcome] = run_ray(specs, RunStore(tmp_path / "ray", "k"), max_retries=2,
                            callbacks=[DieOnce(str(tmp_path / "died"), 3)])
        [clean] = run_ray(specs, RunStore(tmp_path / "clean", "k"))
    finally:
        ray.shutdown()
    assert (tmp_path / "died").exists()  # the first attempt was killed at step 3
    assert outcome.status == clean.status == "done", outcome
    folder = tmp_path / "ray" / "k" / specs[0].id
    records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert any("resumed from step-0000002" in r.get("event", "") for r in records)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]  # steps 3.. logged once, after the retry
    a = load_file(folder / "model" / "model.safetensors")
    b = load_file(tmp_path / "clean" / "k" / specs[0].id / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # same worker settings: bitwise equal to an unkilled run
