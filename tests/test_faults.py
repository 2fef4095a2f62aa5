"""The fault suite: each test breaks a run on purpose and asserts that nothing is lost.

- a kill at a random point (between steps, inside a checkpoint write, before the export, during evals)
  -> the resumed run is bitwise equal to an uninterrupted one; in-process "kills" (an exception no
  handler catches, so no clean-up code runs) in the default suite, real SIGKILLs in the slow one;
- a truncated or corrupted checkpoint -> the previous one is used, and status + report say so;
- a full disk (ENOSPC) during a save -> the last good checkpoint is intact, the run is failed with one
  line naming the disk, and it resumes once there is space;
- two executors started together on one plan -> every run trains exactly once, no file is corrupt;
- a Ray worker killed mid-run -> see tests/plan/test_ray_executor.py;
- bad plans from hypothesis -> see tests/test_plan_fuzz.py.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import subprocess_env, tiny_run_config

import archlab.plan.runner as runner
import archlab.train.checkpoint as ckpt
from archlab.plan import PlanConfig, RunConfig, RunDir, RunStore, expand
from archlab.plan.runner import run_one
from archlab.train import Callback

MAX_STEPS, SAVE_STEPS = 6, 2


class Killed(BaseException):
    """Stands in for SIGKILL in this process: no ``except Exception`` and no clean-up handler sees it."""


def kill_points() -> list[str]:
    """Every place a kill is tried: after each step, at three moments of each checkpoint write, after
    training (before the export) and during the evals."""
    points = [f"step:{n}" for n in range(1, MAX_STEPS)]
    points += [f"save:{moment}:{n}" for n in range(SAVE_STEPS, MAX_STEPS + 1, SAVE_STEPS)
               for moment in ("model", "state", "meta")]
    return [*points, "export", "eval"]


def arm(point: str, die: Callable[[], None]) -> list[Callback]:
    """Make this process ``die()`` at ``point``; returns the callbacks to pass to ``run_one``."""
    kind, _, rest = point.partition(":")
    if kind == "step":
        at = int(rest)

        class DieAt(Callback):
            def on_step_end(self, trainer):
                if trainer.state.step == at:
                    die()

        return [DieAt()]
    if kind == "save":
        moment, step = rest.split(":")
        step = int(step)
        real_save_tree, real_sha = ckpt.save_tree, ckpt._sha256

        def save_tree(folder, name, tree):
            if tree["state"]["step"] == step and moment == "model":
                die()  # model.safetensors is written, the trainer state is not
            out = real_save_tree(folder, name, tree)
            if tree["state"]["step"] == step and moment == "state":
                die()  # both tensor files are written, meta.json (the checksums) is not
            return out

        def sha(path):
            if moment == "meta" and path.parent.name.startswith(f"{ckpt.TMP_PREFIX}{step:07d}"):
                (path.parent / ckpt.META_FILE).write_text('{"step": ')  # half a meta.json
                die()
            return real_sha(path)

        ckpt.save_tree, ckpt._sha256 = save_tree, sha
        return []
    if kind == "export":
        real = runner.exports_model

        def exports_model(config):
            die()
            return real(config)

        runner.exports_model = exports_model
        return []
    if kind == "eval":
        real_eval = runner.run_eval

        def run_eval(spec, ctx):
            die()
            return real_eval(spec, ctx)

        runner.run_eval = run_eval
        return []
    raise ValueError(point)


def _config(corpus_dir: Path) -> dict:
    config = tiny_run_config(corpus_dir, max_steps=MAX_STEPS, save_steps=SAVE_STEPS, save_total_limit=3,
                             logging_steps=1, warmup_ratio=0.2)
    config["model"]["config"]["dropout"] = 0.1  # the restored RNG state matters
    return config


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model" / "model.safetensors")


def _same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    losses = [[(r["step"], r["loss"]) for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
               if "loss" in r] for d in (a, b)]
    assert losses[0] == losses[1]  # every step logged once, with the same loss
    assert json.loads((a / "eval" / "loss.json").read_text())["metrics"] == \
        json.loads((b / "eval" / "loss.json").read_text())["metrics"]
    assert not [p for p in (b / "checkpoints").iterdir() if p.name.startswith(ckpt.TMP_PREFIX)]
    assert all(ckpt.verify(p) for p in ckpt.list_checkpoints(b / "checkpoints"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus_dir) -> Path:
    """The uninterrupted run every faulted one must end equal to (built once for the module)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("reference") / "run"
    assert run_one(RunConfig.parse(_config(corpus_dir)), RunDir(folder)).status == "done"
    return folder


@pytest.fixture
def restore_hooks():
    saved = (ckpt.save_tree, ckpt._sha256, runner.exports_model, runner.run_eval)
    yield
    ckpt.save_tree, ckpt._sha256, runner.exports_model, runner.run_eval = saved


def _die_here() -> None:
    raise Killed()


@pytest.mark.parametrize("seed", [0])
def test_killed_at_random_points_the_resumed_run_is_bitwise_equal(tmp_path, corpus_dir, reference, restore_hooks,
                                                                   seed):
    config = RunConfig.parse(_config(corpus_dir))
    saved = (ckpt.save_tree, ckpt._sha256, runner.exports_model, runner.run_eval)
    for point in random.Random(seed).sample(kill_points(), 2):  # a few here; the slow test kills 10 times
        folder = tmp_path / point.replace(":", "_")
        with pytest.raises(Killed):
            run_one(config, RunDir(folder), arm(point, _die_here))
        ckpt.save_tree, ckpt._sha256, runner.exports_model, runner.run_eval = saved
        assert run_one(config, RunDir(folder)).status == "done", point
        _same_run(reference, folder)


DRIVER = """
import json, os, signal, sys
from pathlib import Path
from archlab.plan import RunConfig, RunDir
from archlab.plan.runner import run_one
from tests.test_faults import arm

config, folder, point = RunConfig.parse(json.loads(sys.argv[1])), Path(sys.argv[2]), sys.argv[3]
callbacks = arm(point, lambda: os.kill(os.getpid(), signal.SIGKILL)) if point else []
print(run_one(config, RunDir(folder), callbacks).status)
"""


def _drive(config: dict, folder: Path, point: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DRIVER, json.dumps(config), str(folder), point],
                          capture_output=True, text=True, env=subprocess_env(OMP_NUM_THREADS="1"), timeout=600)


@pytest.mark.slow  # 21 processes: one straight run, then 10 killed ones and their resumptions
def test_sigkill_at_ten_random_points_loses_nothing(tmp_path, corpus_dir):
    config = _config(corpus_dir)
    straight = _drive(config, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    points = random.Random(14).sample(kill_points(), 10)
    for point in points:
        folder = tmp_path / point.replace(":", "_")
        killed = _drive(config, folder, point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        assert RunDir(folder).status()["status"] == "interrupted", point
        resumed = _drive(config, folder)
        assert resumed.returncode == 0 and resumed.stdout.strip() == "done", (point, resumed.stderr[-2000:])
        _same_run(tmp_path / "straight", folder)


class StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer):
        if trainer.state.step == self.step:
            raise KeyboardInterrupt


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated model": lambda c: _truncate(c / ckpt.MODEL_FILE),
    "flipped byte in the trainer state": lambda c: _flip(c / f"{ckpt.STATE_NAME}.safetensors"),
    "meta.json lost": lambda c: (c / ckpt.META_FILE).unlink(),
}


@pytest.mark.parametrize("damage", [pytest.param(d, marks=[pytest.mark.slow] if i else []) for i, d in enumerate(DAMAGE)])
def test_a_damaged_checkpoint_falls_back_to_the_previous_and_the_report_says_so(tmp_path, corpus_dir, reference,
                                                                               damage):
    from archlab.report import write_report

    config = _config(corpus_dir)
    plan = PlanConfig.parse({"name": "f", "defaults": config, "matrix": {"train.logging_steps": [1]}})
    [spec] = expand(plan)
    store = RunStore(tmp_path / "runs", "f")
    run = store.run(spec.id)
    with pytest.raises(KeyboardInterrupt):
        run_one(spec.config, run, [StopAt(5)])
    newest = ckpt.list_checkpoints(run.checkpoints)[-1]
    assert newest.name == "step-0000004"
    DAMAGE[damage](newest)
    assert run_one(spec.config, run).status == "done"
    status = run.status()
    assert "step-0000004 is corrupt or unusable" in status["message"], status
    assert "resumed from step-0000002" in status["message"], status
    assert status["checkpoint_fallback"] and "\n" not in status["message"]
    _same_run(reference, run.path)  # steps 3-6 trained again: nothing lost
    report = write_report(plan, [spec], store).read_text()
    assert "step-0000004 is corrupt or unusable" in report


def _enospc(path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.mark.parametrize("where", ["trainer state", pytest.param("checkpoint meta", marks=pytest.mark.slow),
                                   pytest.param("metrics log", marks=pytest.mark.slow)])
def test_a_full_disk_keeps_the_last_good_checkpoint_fails_in_one_line_and_resumes(tmp_path, corpus_dir, reference,
                                                                                   monkeypatch, where):
    # the existing test_checkpoint_safety.py fills the disk inside the model tensors; these fill it elsewhere
    from archlab.rundir import MetricsLog

    calls = {"n": 0}
    if where == "trainer state":
        real = ckpt.save_tree

        def full(folder, name, tree):
            calls["n"] += 1
            if calls["n"] == 2:  # the second save: a few bytes get out, then the disk is full
                (folder / f"{name}.safetensors").write_bytes(b"\0" * 64)
                raise _enospc(folder / f"{name}.safetensors")
            return real(folder, name, tree)

        monkeypatch.setattr(ckpt, "save_tree", full)
    elif where == "checkpoint meta":
        real_sha = ckpt._sha256
        seen: set[str] = set()

        def full(path):
            seen.add(path.parent.name)
            if len(seen) == 2:
                raise _enospc(path.parent / ckpt.META_FILE)
            return real_sha(path)

        monkeypatch.setattr(ckpt, "_sha256", full)
    else:
        real_append = MetricsLog.append

        def full(self, record):
            if record.get("step") == 3 and "loss" in record:
                raise _enospc(self.path)
            return real_append(self, record)

        monkeypatch.setattr(MetricsLog, "append", full)
    config = RunConfig.parse(_config(corpus_dir))
    run = RunDir(tmp_path / "run")
    outcome = run_one(config, run)
    status = run.status()
    assert outcome.status == status["status"] == "failed", status
    assert status["message"].startswith("disk full: no space left on the device holding"), status
    assert "\n" not in status["message"]
    assert [p.name for p in run.checkpoints.iterdir()] == ["step-0000002"]  # no partial save left
    assert ckpt.verify(run.checkpoints / "step-0000002")
    monkeypatch.undo()  # space freed: the same run resumes and ends as if nothing had happened
    assert run_one(config, run).status == "done"
    _same_run(reference, run.path)


TWO_EXECUTORS = """
import json, sys
from pathlib import Path
from archlab.plan import PlanConfig, RunStore, expand
from archlab.plan.executor import run_local
from archlab.plan.pool import run_pool

plan = PlanConfig.parse(json.loads(sys.argv[1]))
store = RunStore(Path(sys.argv[2]), plan.name)
specs = expand(plan)
outcomes = run_pool(specs, store, workers=2) if sys.argv[3] == "pool" else run_local(specs, store)
for o in outcomes:
    print("OUTCOME", json.dumps([o.run_id, o.status, o.message]))
"""


@pytest.mark.slow  # two executor processes training four runs between them
def test_two_executors_on_one_plan_train_every_run_exactly_once(tmp_path, corpus_dir):
    plan = {"name": "two", "defaults": tiny_run_config(corpus_dir, max_steps=4, save_steps=2),
            "matrix": {"train.seed": [1, 2, 3, 4]}}
    runs = tmp_path / "runs"
    procs = [subprocess.Popen([sys.executable, "-c", TWO_EXECUTORS, json.dumps(plan), str(runs), kind],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=subprocess_env(OMP_NUM_THREADS="1")) for kind in ("local", "pool")]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outputs]
    outcomes = [json.loads(line.split(" ", 1)[1]) for out, _ in outputs for line in out.splitlines()
                if line.startswith("OUTCOME ")]
    ids = {run_id for run_id, _, _ in outcomes}
    assert len(ids) == 4
    for run_id in ids:
        trained = [o for o in outcomes if o[0] == run_id and o[1] == "done" and o[2] != "already done"]
        assert len(trained) == 1, [o for o in outcomes if o[0] == run_id]
        folder = runs / "two" / run_id
        assert RunDir(folder).status()["status"] == "done"
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if "loss" in r] == [2, 4]  # each step logged once
        assert all(ckpt.verify(p) for p in ckpt.list_checkpoints(folder / "checkpoints"))
        assert not [p for p in (folder / "checkpoints").iterdir() if p.name.startswith(ckpt.TMP_PREFIX)]
        RunConfig.parse(RunDir(folder).read_config())  # config.yaml whole and valid
        assert set(os.listdir(folder)) >= {"config.yaml", "status.json", "metrics.jsonl", "model", "eval"}


@pytest.mark.slow  # two `archlab run` processes training four runs between them
def test_two_identical_archlab_run_commands_started_together_train_every_run_once(tmp_path, corpus_dir):
    import yaml

    plan = {"name": "twin", "defaults": tiny_run_config(corpus_dir, max_steps=4, save_steps=2),
            "matrix": {"train.seed": [1, 2, 3, 4]}}
    plan_file = tmp_path / "twin.yaml"
    plan_file.write_text(yaml.safe_dump(plan))
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "archlab.cli", "run", str(plan_file), "--runs-dir", str(runs)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env=subprocess_env(OMP_NUM_THREADS="1", COLUMNS="200")) for _ in range(2)]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-2000:] + e[-2000:] for o, e in outputs]
    folders = sorted(p for p in (runs / "twin").iterdir() if (p / "config.yaml").exists())
    assert len(folders) == 4
    for folder in folders:
        assert RunDir(folder).status()["status"] == "done"
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if "loss" in r] == [2, 4]  # trained once: each step logged once
        assert not [r for r in records if "resumed" in r.get("event", "")]  # nobody took over a half-run
        assert all(ckpt.verify(p) for p in ckpt.list_checkpoints(folder / "checkpoints"))
        RunConfig.parse(RunDir(folder).read_config())
    # both commands end with a whole report of the four runs, whichever finished last wrote it
    report = (runs / "twin" / "REPORT.md").read_text()
    assert all(folder.name in report for folder in folders)
