"""The local pool executor: N runs at once, each pinned to its GPUs or its share of CPU threads."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import tiny_run_config

from archlab.errors import ArchlabError
from archlab.plan import PlanConfig, RunStore, expand
from archlab.plan import pool as pool_mod
from archlab.plan.executor import run_local
from archlab.plan.pool import (
    child_command,
    child_env,
    gpus_needed,
    parse_gpus,
    run_pool,
    threads_per_run,
)


def _plan(corpus_dir, **extra) -> PlanConfig:
    return PlanConfig.parse({"name": "p", "defaults": tiny_run_config(corpus_dir), "matrix": {"train.seed": [1, 2]},
                             **extra})


def test_gpu_lists_threads_and_environments():
    assert parse_gpus("0, 1,3") == ["0", "1", "3"] and parse_gpus(None) is None
    for bad in ("", "a", "0,0", "1,-2"):
        with pytest.raises(ArchlabError, match="--gpus"):
            parse_gpus(bad)
    assert threads_per_run(2, cores=2) == 1 and threads_per_run(1, cores=2) == 2 and threads_per_run(8, cores=2) == 1
    env = child_env(3, ["2", "5"])
    assert env["CUDA_VISIBLE_DEVICES"] == "2,5" and env["OMP_NUM_THREADS"] == "3"
    assert child_env(1, [])["CUDA_VISIBLE_DEVICES"] == ""  # a CPU run in a GPU pool sees no GPU
    assert child_env(1, None).get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")  # untouched
    one, two = child_command({}, "f"), child_command({}, "f", processes=2)
    assert one[:3] == [sys.executable, "-m", "archlab.plan.pool"]
    assert two[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def test_resources_are_placement_not_identity(corpus_dir):
    plain = expand(_plan(corpus_dir))
    asked = expand(_plan(corpus_dir, rules=[{"when": {"train.seed": 2}, "set": {"resources.gpus": 2}}]))
    assert [s.id for s in plain] == [s.id for s in asked]
    assert "resources" not in plain[0].config.to_dict()
    assert gpus_needed(plain[0], True) == 1 and gpus_needed(plain[0], False) == 0
    assert gpus_needed(asked[1], True) == 2


class FakeProcess:
    """Finishes after ``polls`` polls; records how many GPUs were in use while it ran."""

    def __init__(self, polls: int):
        self.left, self.returncode = polls, None

    def poll(self):
        self.left -= 1
        if self.left <= 0:
            self.returncode = 0
        return self.returncode


def test_a_run_needing_k_gpus_waits_for_k_free(tmp_path, corpus_dir, monkeypatch):
    plan = _plan(corpus_dir, matrix={"train.seed": [1, 2, 3, 4]},
                 rules=[{"when": {"train.seed": 3}, "set": {"resources.gpus": 3}}])
    specs = expand(plan)
    started: list[tuple[str, list[str], int]] = []
    live: list[pool_mod._Running] = []

    def fake_start(spec, run, threads, gpus):
        in_use = sum(len(r.gpus) for r in live if r.process.returncode is None)
        started.append((spec.config.train.seed, gpus, in_use))
        log = tmp_path / f"{spec.id}.log"
        log.write_text(pool_mod.OUTCOME_MARK + json.dumps({"status": "done", "message": ""}) + "\n")
        item = pool_mod._Running(spec, FakeProcess(3), list(gpus), log)
        live.append(item)
        return item

    monkeypatch.setattr(pool_mod, "_start", fake_start)
    outcomes = run_pool(specs, RunStore(tmp_path, "p"), gpus=["0", "1", "2"], poll_seconds=0)
    assert [o.status for o in outcomes] == ["done"] * 4
    seeds = [s for s, _, _ in started]
    assert seeds == [1, 2, 3, 4]  # first come, first served
    big = next(x for x in started if x[0] == 3)
    assert len(big[1]) == 3 and big[2] == 0  # it started only once the other runs had given their GPUs back
    assert all(len(g) == 1 for s, g, _ in started if s != 3)
    too_big = run_pool(specs[2:3], RunStore(tmp_path / "b", "p"), gpus=["0"], poll_seconds=0)
    assert too_big[0].status == "failed" and "needs 3 GPUs" in too_big[0].message


@pytest.mark.slow  # two worker processes, each importing torch and training
def test_two_workers_train_both_runs_each_with_its_share_of_threads(tmp_path, corpus_dir):
    specs = expand(_plan(corpus_dir))
    outcomes = run_pool(specs, RunStore(tmp_path / "pool", "p"), workers=2)
    assert [o.status for o in outcomes] == ["done", "done"], outcomes
    local = run_local(specs, RunStore(tmp_path / "local", "p"))
    assert [o.status for o in local] == ["done", "done"]
    for spec in specs:
        folder = tmp_path / "pool" / "p" / spec.id
        assert json.loads((folder / "env.json").read_text())["torch_threads"] == threads_per_run(2)
        a, b = load_file(folder / "model" / "model.safetensors"), load_file(
            tmp_path / "local" / "p" / spec.id / "model" / "model.safetensors")
        for key in a:  # another thread count may round sums differently
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    again = run_pool(specs, RunStore(tmp_path / "pool", "p"), workers=2)
    assert [o.message for o in again] == ["already done", "already done"]


def test_ray_requests_the_resources_a_plan_gives_each_run(corpus_dir):
    from archlab.plan.executor import ray_resources

    plain, asked = expand(_plan(corpus_dir, rules=[{"when": {"train.seed": 2},
                                                   "set": {"resources": {"gpus": 2, "cpus": 4}}}]))
    assert ray_resources(plain, 1, 0) == {"num_cpus": 1, "num_gpus": 0}
    assert ray_resources(asked, 1, 0) == {"num_cpus": 4, "num_gpus": 2}
