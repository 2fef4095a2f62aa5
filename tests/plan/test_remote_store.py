"""The run store on fsspec: local paths as before, memory:// (as s3:// or gs:// would be) staged locally and
mirrored, resumable on another machine from the uploaded checkpoints; one line for a missing package."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import fsspec
import pytest
import torch
from fsspec.implementations.memory import MemoryFileSystem
from safetensors.torch import load_file
from tests.conftest import tiny_run_config
from tests.test_cli import cli, tiny_plan

from archlab.errors import ArchlabError
from archlab.plan import PlanConfig, RunStore, expand
from archlab.plan.executor import run_local, run_staged
from archlab.plan.pool import run_pool
from archlab.plan.remote import Mirror, local_root, protocol_of
from archlab.train import Callback


@pytest.fixture(autouse=True)
def _staging(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHLAB_STAGING", str(tmp_path / "staging"))
    yield
    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs[:] = [""]


def test_local_paths_and_file_urls_are_used_as_they_are(tmp_path):
    assert protocol_of("runs") is None and protocol_of("/a/b") is None and protocol_of("s3://b/x") == "s3"
    store = RunStore(tmp_path / "runs", "p")
    assert store.mirror is None and store.root == tmp_path / "runs" / "p"
    url = RunStore(f"file://{tmp_path}/runs", "p")
    assert url.mirror is None and url.root == tmp_path / "runs" / "p"
    assert local_root(f"file://{tmp_path}") == tmp_path
    with pytest.raises(ArchlabError, match="not inside"):
        RunStore(tmp_path / "runs", "../escape")


def test_a_missing_filesystem_package_is_one_line(monkeypatch, capsys, tmp_path, corpus_dir):
    import importlib.util

    for proto, package in (("s3", "s3fs"), ("gs", "gcsfs")):
        if importlib.util.find_spec(package) is not None:
            continue
        with pytest.raises(ArchlabError, match=f"{proto}:// needs {package}, which is not installed: pip install"):
            RunStore(f"{proto}://bucket/runs", "p")
    with pytest.raises(ArchlabError, match="fsspec knows no filesystem 'nosuch://'"):
        RunStore("nosuch://x/runs", "p")
    if importlib.util.find_spec("s3fs") is None:
        code, out = cli(monkeypatch, capsys, "plan", str(tiny_plan(tmp_path, corpus_dir)), "--runs-dir", "s3://b/r")
        assert code == 2 and "Traceback" not in out
        assert [line for line in out.splitlines() if line.startswith("error:")][0].endswith("pip install s3fs")


def test_uploads_use_a_rename_where_there_is_one_and_say_so_where_there_is_none(tmp_path):
    staging = tmp_path / "stage"
    (staging / "r1" / "checkpoints" / "step-0000001").mkdir(parents=True)
    (staging / "r1" / "status.json").write_text("{}")
    (staging / "r1" / "checkpoints" / "step-0000001" / "model.safetensors").write_bytes(b"x" * 10)
    (staging / "r1" / ".lock").write_text("")
    remote = tmp_path / "remote"
    mirror = Mirror(f"file://{remote}", staging)
    assert mirror.atomic == "rename"
    assert mirror.push("r1") == 2
    assert sorted(str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file()) == [
        "r1/checkpoints/step-0000001/model.safetensors", "r1/status.json"]  # no lock, no temporary upload left
    assert mirror.push("r1") == 0  # nothing changed
    shutil.rmtree(staging / "r1" / "checkpoints" / "step-0000001")  # pruned locally (save_total_limit)
    mirror.push("r1")
    assert not (remote / "r1" / "checkpoints" / "step-0000001").exists()

    class NoRename(MemoryFileSystem):
        protocol = "norename"

    fsspec.register_implementation("norename", NoRename, clobber=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert Mirror("norename://x", staging).atomic is None
    assert any("half uploaded" in str(w.message) for w in caught)


class StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer):
        if trainer.state.step == self.step:
            raise KeyboardInterrupt


def test_a_memory_store_trains_uploads_and_resumes_on_a_fresh_machine(tmp_path, corpus_dir):
    plan = PlanConfig.parse({"name": "m", "defaults": tiny_run_config(corpus_dir, max_steps=6, save_steps=2,
                                                                      logging_steps=1), "matrix": {"train.seed": [1]}})
    [spec] = expand(plan)
    [done] = run_local([spec], RunStore(tmp_path / "local", "m"))
    assert done.status == "done"

    url = "memory://bucket/runs"
    store = RunStore(url, "m")
    assert store.mirror is not None and store.root.is_relative_to(tmp_path / "staging")
    with pytest.raises(KeyboardInterrupt):
        run_staged(spec.id, spec.config, store, [StopAt(5)])
    fs = fsspec.filesystem("memory")
    remote = f"/bucket/runs/m/{spec.id}"
    assert fs.exists(f"{remote}/checkpoints/step-0000004/meta.json")  # uploaded as training went
    assert '"pending"' in fs.cat(f"{remote}/status.json").decode()

    shutil.rmtree(tmp_path / "staging")  # another machine: nothing local
    fresh = RunStore(url, "m")
    assert fresh.run(spec.id).status()["status"] == "pending"  # read from the remote
    [outcome] = run_local([spec], fresh)
    assert outcome.status == "done"
    events = [r.get("event", "") for r in fresh.run(spec.id).metrics.read()]
    assert any("resumed from step-0000004" in e for e in events), events
    a = load_file(tmp_path / "local" / "m" / spec.id / "model" / "model.safetensors")
    b = load_file(fresh.run(spec.id).model_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    for name in ("status.json", "metrics.jsonl", "config.yaml", "eval/loss.json", "model/model.safetensors"):
        assert fs.exists(f"{remote}/{name}"), name
    assert '"done"' in fs.cat(f"{remote}/status.json").decode()
    assert sorted(Path(p).name for p in fs.ls(f"{remote}/checkpoints", detail=False)) == \
        [p.name for p in sorted((fresh.root / spec.id / "checkpoints").iterdir())]
    shutil.rmtree(tmp_path / "staging")
    assert run_local([spec], RunStore(url, "m"))[0].message == "already done"
    with pytest.raises(ArchlabError, match="memory:// lives in one process"):
        run_pool([spec], RunStore(url, "m"), workers=2)
