from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import tiny_run_config

from archlab.plan import PlanConfig, RunStore, expand
from archlab.plan.executor import run_local, run_ray

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
