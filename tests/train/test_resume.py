"""Exact resume: a run killed with SIGKILL and resumed ends bitwise equal to an uninterrupted run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import subprocess_env, tiny_run_config

from archlab.plan import RunConfig, RunDir
from archlab.plan.runner import run_one
from archlab.train import Callback

DRIVER = """
import json, os, signal, sys
from pathlib import Path
from archlab.plan import RunConfig, RunDir
from archlab.plan.runner import run_one
from archlab.train import Callback

config, folder, kill_at = RunConfig.parse(json.loads(sys.argv[1])), Path(sys.argv[2]), int(sys.argv[3])

class KillAt(Callback):
    def on_step_end(self, trainer):
        if trainer.state.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

print(run_one(config, RunDir(folder), [KillAt()] if kill_at else []).status)
"""


def _drive(config: dict, folder: Path, kill_at: int) -> subprocess.CompletedProcess:
    env = subprocess_env()
    return subprocess.run([sys.executable, "-c", DRIVER, json.dumps(config), str(folder), str(kill_at)],
                          capture_output=True, text=True, env=env, timeout=300)


class StopAt5(Callback):
    """Ctrl-C after the fifth optimizer step."""

    def on_step_end(self, trainer):
        if trainer.state.step == 5:
            raise KeyboardInterrupt


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model" / "model.safetensors")


@pytest.mark.slow  # kills and restarts subprocesses: CI runs it with the slow suite
def test_sigkill_then_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path, corpus_dir):
    config = tiny_run_config(corpus_dir, max_steps=10, save_steps=3, optim="muon", warmup_ratio=0.2)
    config["model"]["config"]["dropout"] = 0.1  # exercises the restored RNG state
    straight = _drive(config, tmp_path / "straight", 0)
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = _drive(config, tmp_path / "resumed", 7)
    assert killed.returncode == -9
    # killed without a chance to record it: the dead owner pid shows the run as interrupted, not running
    assert RunDir(tmp_path / "resumed").status()["status"] == "interrupted"
    assert not (tmp_path / "resumed" / "model").exists()
    resumed = _drive(config, tmp_path / "resumed", 0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines())
               if "loss" in r] for d in ("straight", "resumed")]
    assert losses[0] == losses[1]
    assert RunDir(tmp_path / "resumed").status()["status"] == "done"


def test_a_corrupt_only_checkpoint_is_ignored_and_the_run_restarts_cleanly(tmp_path, corpus_dir):
    config = RunConfig.parse(tiny_run_config(corpus_dir, max_steps=6, save_steps=3, save_total_limit=3))
    reference = RunDir(tmp_path / "reference")
    assert run_one(config, reference).status == "done"

    run = RunDir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_one(config, run, [StopAt5()])
    assert run.status()["status"] == "pending"
    assert "run again to resume" in run.status()["message"]
    # the only checkpoint is corrupt: the resumed run must notice it and start from scratch
    ckpts = sorted((run.path / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["step-0000003"]
    blob = ckpts[-1] / "model.safetensors"
    data = bytearray(blob.read_bytes())
    data[-10] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert run_one(config, run).status == "done"
    events = [json.loads(x).get("event", "") for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert any("corrupt" in e for e in events)
    a, b = _weights(reference.path), _weights(run.path)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resume_uses_the_newest_valid_checkpoint(tmp_path, corpus_dir):
    config = RunConfig.parse(tiny_run_config(corpus_dir, max_steps=6, save_steps=2, save_total_limit=3))
    reference = RunDir(tmp_path / "reference")
    run_one(config, reference)

    run = RunDir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_one(config, run, [StopAt5()])
    ckpts = sorted((run.path / "checkpoints").iterdir())
    (ckpts[-1] / "trainer_state.safetensors").write_bytes(b"garbage")
    assert run_one(config, run).status == "done"
    events = [json.loads(x).get("event", "") for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert any("resumed from step-0000002" in e for e in events)
    a, b = _weights(reference.path), _weights(run.path)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_frozen_random_weights_are_checkpointed_and_eval_rebuilds_the_model(tmp_path, corpus_dir):
    from safetensors import safe_open

    from archlab.plan.runner import evaluate_run_dir

    config = tiny_run_config(corpus_dir, max_steps=4, save_steps=2, trainable=["*.q_proj.*", "*.v_proj.*"])
    config["model"] = {"hf_config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}}
    run = RunDir(tmp_path / "run")
    assert run_one(RunConfig.parse(config), run).status == "done"
    assert not (run.path / "model").exists()
    [last] = sorted((run.path / "checkpoints").iterdir())[-1:]
    with safe_open(last / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert any(".k_proj." in n for n in names)  # frozen but randomly initialised: must be kept
    before = json.loads((run.path / "eval" / "loss.json").read_text())["metrics"]["loss"]
    [again] = evaluate_run_dir(run.path, ["loss"])
    assert again["metrics"]["loss"] == pytest.approx(before, rel=1e-6)


def test_a_pretrained_base_is_not_copied_into_checkpoints(tmp_path, corpus_dir):
    from safetensors import safe_open
    from transformers import LlamaConfig, LlamaForCausalLM

    from archlab.plan.runner import evaluate_run_dir

    base = tmp_path / "base"
    LlamaForCausalLM(LlamaConfig(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(base)
    config = tiny_run_config(corpus_dir, max_steps=4, save_steps=2, trainable=["*.q_proj.*"])
    config["model"] = {"pretrained": str(base)}
    run = RunDir(tmp_path / "run")
    assert run_one(RunConfig.parse(config), run).status == "done"
    [last] = sorted((run.path / "checkpoints").iterdir())[-1:]
    with safe_open(last / "model.safetensors", "pt") as f:
        assert all(".q_proj." in n for n in f.keys())
    before = json.loads((run.path / "eval" / "loss.json").read_text())["metrics"]["loss"]
    assert evaluate_run_dir(run.path, ["loss"])[0]["metrics"]["loss"] == pytest.approx(before, rel=1e-9)
