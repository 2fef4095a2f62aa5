"""The archlab command as a user meets it: help, dry runs, a whole tiny plan, bad input, Ctrl-C."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tests.conftest import TINY_MODEL, subprocess_env
from tests.conftest import cli as run_cli

ROOT = Path(__file__).resolve().parents[1]


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    return run_cli(monkeypatch, capsys, *args, width=250)


def tiny_plan(tmp_path: Path, corpus_dir: Path, **changes) -> Path:
    plan = {
        "name": "tiny",
        "defaults": {
            "model": {"config": dict(TINY_MODEL)},
            "data": {"source": str(corpus_dir), "tokenizer": "bytes", "block_size": 32},
            "train": {"max_steps": 4, "per_device_train_batch_size": 4, "logging_steps": 2},
            "eval": [{"name": "loss", "max_examples": 8}, {"name": "generate_samples", "max_new_tokens": 4}],
        },
        "axes": {"pos": {"learned": {"model.config.position_embedding": "learned"},
                         "rope": {"model.config.position_embedding": "rope"}}},
        "matrix": {"pos": ["learned", "rope"]},
        "baseline": {"pos": "learned"},
        **changes,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_help_lists_every_subcommand(monkeypatch, capsys):
    code, out = cli(monkeypatch, capsys, "--help")
    assert code == 0
    for sub in ("run", "plan", "report", "train", "eval", "ls", "keys"):
        assert sub in out


def test_plan_dry_run_lists_the_quickstart_runs(monkeypatch, capsys, tmp_path):
    code, out = cli(monkeypatch, capsys, "plan", str(ROOT / "plans/quickstart.yaml"), "--runs-dir", str(tmp_path))
    assert code == 0
    assert "4 runs" in out and "learned-adamw-" in out and "pending" in out


def test_ls_and_keys_show_registries_and_field_descriptions(monkeypatch, capsys):
    code, out = cli(monkeypatch, capsys, "ls")
    assert code == 0 and "attention" in out and "generate_samples" in out and "embedded:shakespeare" in out
    code, out = cli(monkeypatch, capsys, "keys", "train")
    assert code == 0 and "per_device_train_batch_size" in out and "micro-batch" in out


def test_keys_model_arch_lists_that_architectures_config_keys_with_types(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    code, out = cli(monkeypatch, capsys, "keys", "model", "hope")
    row = next(line for line in out.splitlines() if " cms_periods " in line)
    assert code == 0 and "list[int] | None" in row and "HopeConfig" in out
    code, out = cli(monkeypatch, capsys, "keys", "model", "hop")
    assert code == 2 and "unknown architecture 'hop' (did you mean 'hope'?)" in out


def test_a_whole_plan_runs_reports_and_is_skipped_when_done(monkeypatch, capsys, tmp_path, corpus_dir):
    plan = tiny_plan(tmp_path, corpus_dir)
    runs = tmp_path / "runs"
    code, out = cli(monkeypatch, capsys, "run", str(plan), "--runs-dir", str(runs))
    assert code == 0, out
    report = runs / "tiny" / "REPORT.md"
    assert report.exists()
    text = report.read_text()
    assert "| Variant | What changed | Status |" in text and "✅" in text and "baseline" in text
    assert (runs / "tiny" / "plots" / "loss_runs.png").exists()
    run_dirs = sorted(p for p in (runs / "tiny").iterdir() if p.is_dir() and p.name != "plots")
    assert len(run_dirs) == 2
    for run in run_dirs:
        for name in ("config.yaml", "status.json", "metrics.jsonl", "env.json", "samples.jsonl", "eval/loss.json"):
            assert (run / name).exists(), name
        loss = json.loads((run / "eval" / "loss.json").read_text())
        assert loss["n"] > 0 and loss["metrics"]["bits_per_byte"] > 0 and len(loss["ci95"]["accuracy"]) == 2
    mtimes = {p: (p / "metrics.jsonl").stat().st_mtime for p in run_dirs}
    code, out = cli(monkeypatch, capsys, "run", str(plan), "--runs-dir", str(runs))
    assert code == 0
    assert all((p / "metrics.jsonl").stat().st_mtime == m for p, m in mtimes.items())

    # an edited plan gives the changed runs new ids; old results stay where they were
    edited = tiny_plan(tmp_path, corpus_dir, matrix={"pos": ["learned"]},
                       defaults={**yaml.safe_load(plan.read_text())["defaults"],
                                 "train": {"max_steps": 3, "per_device_train_batch_size": 4}})
    code, out = cli(monkeypatch, capsys, "plan", str(edited), "--runs-dir", str(runs))
    assert code == 0 and "pending" in out
    assert all(p.exists() for p in run_dirs)

    code, out = cli(monkeypatch, capsys, "eval", str(run_dirs[0]), "--evals", "loss")
    assert code == 0 and "loss (n=" in out

    # a damaged run folder is one error line naming the file, not a traceback
    (run_dirs[0] / "model" / "config.json").write_text("garbage")
    code, out = cli(monkeypatch, capsys, "eval", str(run_dirs[0]), "--evals", "loss")
    assert code == 2 and "model cannot be loaded" in out and "Traceback" not in out, out
    (run_dirs[1] / "config.yaml").write_text("model: [unclosed\n")
    code, out = cli(monkeypatch, capsys, "compare", str(run_dirs[0]), str(run_dirs[1]))
    assert code == 2 and "config.yaml: not valid YAML at line 2" in out and "Traceback" not in out, out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"matrx": {}}, "unknown key 'matrx' (did you mean 'matrix'?)"),
        ({"defaults": {"train": {"max_steps": "lots"}}}, "'train.max_steps'"),
        ({"defaults": {"model": {"config": {"mixer": "atention"}}}}, "unknown mixer 'atention' (did you mean 'attention'?)"),
        ({"defaults": {"data": {"source": "no-such-org/no-such-data"}}}, "could not be loaded from the Hugging Face hub"),
        ({"matrix": {}}, "its matrix is empty"),
        ({"include": [{"name": "a", "set": {"pos": "rope"}}, {"name": "a", "set": {"pos": "learned"}}]},
         "duplicate run name 'a'"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(monkeypatch, capsys, tmp_path, corpus_dir, change, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    plan = tiny_plan(tmp_path, corpus_dir, **change)
    code, out = cli(monkeypatch, capsys, "run", str(plan), "--runs-dir", str(tmp_path / "runs"))
    assert code != 0
    assert message in out
    assert "Traceback" not in out


def test_missing_plan_file(monkeypatch, capsys, tmp_path):
    code, out = cli(monkeypatch, capsys, "run", str(tmp_path / "nope.yaml"))
    assert code == 2 and "file not found" in out and len(out.strip().splitlines()) == 1


@pytest.mark.slow  # signals a subprocess run: CI runs it with the slow suite
@pytest.mark.parametrize(("sig", "code", "said"), [(signal.SIGINT, 130, "interrupted"),
                                                   (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_and_sigterm_leave_the_run_resumable(tmp_path, corpus_dir, sig, code, said):
    plan = tiny_plan(tmp_path, corpus_dir, matrix={"pos": ["rope"]})
    data = yaml.safe_load(plan.read_text())
    data["defaults"]["train"].update(max_steps=100_000, save_steps=1, logging_steps=1)
    plan.write_text(yaml.safe_dump(data))
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "archlab.cli", "run", str(plan), "--runs-dir", str(runs)]
    # a shell that starts jobs in the background (as CI may) leaves SIGINT ignored; Ctrl-C needs the default
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list(runs.glob("tiny/*/checkpoints/step-0000002")):
        time.sleep(0.2)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, out
    assert f"{said}: finished runs and checkpoints are kept; run the same command again to resume" in out
    assert "Traceback" not in out
    [run] = [p for p in (runs / "tiny").iterdir() if p.is_dir()]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "pending" and f"{said} at step" in status["message"]
    assert list((run / "checkpoints").glob("step-*"))


def test_ctrl_c_during_start_up_is_one_line(tmp_path, corpus_dir):
    archlab = shutil.which("archlab")
    if archlab is None:
        pytest.skip("the archlab command is not installed")
    cmd = [archlab, "plan", str(tiny_plan(tmp_path, corpus_dir))]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.5)  # still importing torch
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert out.strip().splitlines() == ["interrupted while starting; nothing was run"]


def test_train_one_run_from_a_config_file_with_overrides(monkeypatch, capsys, tmp_path, corpus_dir):
    out_dir = tmp_path / "one"
    code, out = cli(monkeypatch, capsys, "train", str(ROOT / "configs/tiny.yaml"), "train.max_steps=3",
                    f"data.source={corpus_dir}", "data.tokenizer=bytes", "data.block_size=32", "--out", str(out_dir))
    assert code == 0, out
    config = yaml.safe_load((out_dir / "config.yaml").read_text())
    assert config["train"]["max_steps"] == 3 and config["model"]["config"]["mlp"] == "swiglu"
    assert json.loads((out_dir / "status.json").read_text())["status"] == "done"
