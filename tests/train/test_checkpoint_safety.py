"""Checkpoints are data: a planted pickle never runs, a partial checkpoint never loads, a full disk fails cleanly.

Also: a restart from step 0 truncates metrics.jsonl, and the console is told which checkpoint was used.
"""

from __future__ import annotations

import errno
import hashlib
import json
import pickle
from pathlib import Path

import pytest
from safetensors.torch import save_file
from tests.conftest import tiny_run_config

import archlab.train.checkpoint as ckpt
from archlab.errors import ArchlabError
from archlab.plan import RunConfig, RunDir
from archlab.plan.runner import evaluate_run_dir, run_one
from archlab.train import Callback


class StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer):
        if trainer.state.step == self.step:
            raise KeyboardInterrupt


class Events(Callback):
    def __init__(self):
        self.seen: list[str] = []

    def on_event(self, trainer, message):
        self.seen.append(message)


class Payload:
    """Unpickling this touches a marker file: proof that the loader ran code from the checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant(folder: Path, name: str, data: bytes) -> None:
    """Replace ``name`` and fix meta.json's checksum, as whoever can write the folder can."""
    (folder / name).write_bytes(data)
    meta = json.loads((folder / "meta.json").read_text())
    meta["sha256"][name] = hashlib.sha256(data).hexdigest()
    (folder / "meta.json").write_text(json.dumps(meta))


def _random_llama(corpus_dir: Path, **train) -> RunConfig:
    """Not exported with save_pretrained: `archlab eval` rebuilds it from checkpoints/."""
    config = tiny_run_config(corpus_dir, max_steps=4, save_steps=2, **train)
    config["model"] = {"hf_config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 48,
                                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}}
    return RunConfig.parse(config)


def test_a_planted_pickle_is_never_executed_on_resume_or_eval(tmp_path, corpus_dir):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"state": Payload(marker)})
    config = _random_llama(corpus_dir, save_total_limit=3)
    run = RunDir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_one(config, run, [StopAt(3)])
    [latest] = ckpt.list_checkpoints(run.checkpoints)
    for name in ("trainer_state.pt", "trainer_state.safetensors", "trainer_state.json"):
        _plant(latest, name, payload)
    events = Events()
    assert run_one(config, run, [events]).status == "done"  # the planted checkpoint is refused, training restarts
    assert not marker.exists()
    assert any("step-0000002 is corrupt or unusable" in e for e in events.seen), events.seen
    assert any("starts again from step 0" in e for e in events.seen), events.seen

    for folder in ckpt.list_checkpoints(run.checkpoints):
        _plant(folder, "trainer_state.pt", payload)
        _plant(folder, "trainer_state.safetensors", payload)
    [result] = evaluate_run_dir(run.path, ["loss"])  # eval reads model tensors only
    assert result["metrics"]["loss"] > 0 and not marker.exists()


def test_a_checkpoint_missing_tensors_is_never_evaluated_as_a_random_model(tmp_path, corpus_dir):
    run = RunDir(tmp_path / "run")
    assert run_one(_random_llama(corpus_dir), run).status == "done"
    for folder in ckpt.list_checkpoints(run.checkpoints):
        save_file({}, str(folder / "empty.safetensors"))
        _plant(folder, "model.safetensors", (folder / "empty.safetensors").read_bytes())
    with pytest.raises(ArchlabError, match="no usable checkpoint"):
        evaluate_run_dir(run.path, ["loss"])


def test_a_full_disk_keeps_the_last_checkpoint_and_fails_in_one_line(tmp_path, corpus_dir, monkeypatch):
    real_save, calls = ckpt.save_file, {"n": 0}

    def save_until_full(tensors, path):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(path).write_bytes(b"\0" * 1000)  # half a file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real_save(tensors, path)

    monkeypatch.setattr(ckpt, "save_file", save_until_full)
    run = RunDir(tmp_path / "run")
    outcome = run_one(RunConfig.parse(tiny_run_config(corpus_dir, max_steps=6, save_steps=2)), run)
    status = run.status()
    assert outcome.status == status["status"] == "failed"
    assert status["message"].startswith("disk full: no space left on the device holding")
    assert "\n" not in status["message"]
    assert [p.name for p in run.checkpoints.iterdir()] == ["step-0000002"]  # no .tmp-step-* left behind
    assert ckpt.verify(run.checkpoints / "step-0000002")
    assert not run.error_log.exists() or run.error_log.read_text().strip()


def test_partial_saves_left_by_a_kill_are_removed_on_the_next_start(tmp_path, corpus_dir):
    run = RunDir(tmp_path / "run")
    partial = run.checkpoints / ".tmp-step-0000004-12345"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"\0" * 4096)
    assert run_one(RunConfig.parse(tiny_run_config(corpus_dir, max_steps=2)), run).status == "done"
    assert not partial.exists()


def test_an_unexpected_error_leaves_a_non_empty_error_log(tmp_path, corpus_dir):
    class Boom(Callback):
        def on_step_end(self, trainer):
            raise RuntimeError("boom")

    run = RunDir(tmp_path / "run")
    outcome = run_one(RunConfig.parse(tiny_run_config(corpus_dir, max_steps=2)), run, [Boom()])
    assert outcome.status == "failed" and "RuntimeError: boom (traceback in" in outcome.message
    assert "Traceback" in run.error_log.read_text()


def test_error_log_is_not_left_empty_when_it_cannot_be_written(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    assert run.record_error("Traceback ...") is False
    assert not run.error_log.exists() and not list(run.path.iterdir())


def test_a_restart_from_step_0_does_not_log_steps_twice(tmp_path, corpus_dir):
    config = RunConfig.parse(tiny_run_config(corpus_dir, max_steps=6, save_steps=0, logging_steps=1))
    run = RunDir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_one(config, run, [StopAt(5)])  # save_steps 0: no checkpoint before the end
    assert run_one(config, run).status == "done"
    steps = [r["step"] for r in run.metrics.read() if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_the_console_is_told_which_checkpoint_was_used(tmp_path, corpus_dir):
    config = RunConfig.parse(tiny_run_config(corpus_dir, max_steps=6, save_steps=2, save_total_limit=3))
    run = RunDir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_one(config, run, [StopAt(5)])
    newest = ckpt.list_checkpoints(run.checkpoints)[-1]
    (newest / "model.safetensors").write_bytes(b"garbage")
    events = Events()
    assert run_one(config, run, [events]).status == "done"
    assert any(e.startswith("checkpoint step-0000004 is corrupt or unusable (checksum") for e in events.seen)
    assert "resumed from step-0000002 (step 2)" in events.seen
    steps = [r["step"] for r in run.metrics.read() if "loss" in r]
    assert steps == sorted(set(steps))
