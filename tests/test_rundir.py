"""The run folder's owner: stale 'running' shows as interrupted and resumes; paths stay under their roots."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys

import pytest
from tests.conftest import tiny_run_config
from tests.test_cli import cli, tiny_plan

import archlab.rundir
from archlab.errors import ArchlabError
from archlab.files import atomic_write, jsonl_problem, slug
from archlab.plan import RunConfig, RunSpec, RunStore, expand, load_plan
from archlab.plan.executor import run_local
from archlab.rundir import RunDir


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _running(run: RunDir, pid: int, host: str, age_minutes: float) -> None:
    beat = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=age_minutes)).isoformat(timespec="seconds")
    record = {"status": "running", "updated": beat, "heartbeat": beat, "owner": {"pid": pid, "host": host}}
    atomic_write(run.path / RunDir.STATUS, json.dumps(record))


@pytest.mark.parametrize(
    ("owner", "age", "shown"),
    [("dead pid", 0, "interrupted"), ("this process", 0, "running"), ("other host", 0, "running"),
     ("other host", 60, "interrupted"), ("this process", 60, "interrupted")],
)
def test_a_running_status_whose_owner_is_gone_reads_as_interrupted(tmp_path, owner, age, shown):
    run = RunDir(tmp_path / "run")
    pid = _dead_pid() if owner == "dead pid" else 1 if owner == "other host" else None
    host = "elsewhere.example" if owner == "other host" else socket.gethostname()
    _running(run, pid or os.getpid(), host, age)
    status = run.status()
    assert status["status"] == shown
    if shown == "interrupted":
        assert "run again to resume" in status["message"]


def test_the_heartbeat_refreshes_a_running_status_and_never_overwrites_a_final_one(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    run.set_status("running")
    first = json.loads((run.path / RunDir.STATUS).read_text())
    assert first["owner"]["pid"] > 0 and first["heartbeat"]
    monkeypatch.setattr(archlab.rundir, "_now", lambda: "2999-01-01T00:00:00+00:00")
    run.beat()
    assert json.loads((run.path / RunDir.STATUS).read_text())["heartbeat"] == "2999-01-01T00:00:00+00:00"
    run.set_status("done")
    run.beat()
    assert run.status()["status"] == "done" and "heartbeat" not in run.status()


def test_archlab_plan_shows_a_killed_run_as_interrupted_and_run_resumes_it(monkeypatch, capsys, tmp_path,
                                                                            corpus_dir):
    plan_path = tiny_plan(tmp_path, corpus_dir, matrix={"pos": ["rope"]})
    [spec] = expand(load_plan(plan_path))
    run = RunStore(tmp_path / "runs", "tiny").run(spec.id)
    _running(run, _dead_pid(), socket.gethostname(), 0)
    code, out = cli(monkeypatch, capsys, "plan", str(plan_path), "--runs-dir", str(tmp_path / "runs"))
    assert code == 0 and "interrupted" in out and "running" not in out.split("checking them...")[1]
    [outcome] = run_local([spec], RunStore(tmp_path / "runs", "tiny"))
    assert outcome.status == "done" and run.is_done()


def test_is_done_is_the_one_done_check(tmp_path, corpus_dir):
    config = RunConfig.parse(tiny_run_config(corpus_dir, max_steps=1))
    store = RunStore(tmp_path, "p")
    store.run("r").set_status("done")
    [outcome] = run_local([RunSpec("r", {}, config)], store)
    assert outcome.message == "already done" and not (store.run("r").path / RunDir.METRICS).exists()


@pytest.mark.parametrize("name", ["../escaped", "/abs/path", "..", ".", "a/../../b"])
def test_paths_outside_their_root_are_refused(tmp_path, name):
    with pytest.raises(ArchlabError, match="not inside"):
        RunStore(tmp_path / "runs", name)


def test_a_symlink_out_of_the_plan_folder_is_refused(tmp_path):
    store = RunStore(tmp_path / "runs", "plan")
    store.root.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (store.root / "plots").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ArchlabError, match="refusing to write"):
        store.file("plots")
    assert store.file("REPORT.md") == store.root / "REPORT.md"


@pytest.mark.parametrize(("text", "expected"), [("Core variants (LoRA, mu 0.5)", "Core_variants_LoRA_mu_0.5"),
                                                ("../../etc/passwd", "etc_passwd"), ("...", "run"),
                                                ("-a-", "a"), ("x" * 100, "x" * 80)])
def test_one_slug_function(text, expected):
    assert slug(text) == expected


@pytest.mark.parametrize("content,problem", [
    (b'{"a": 1}\n{"b": 2}\n', None),
    (b'{"a": 1}\n\n{"b": 2}', None),
    (b'{"a": 1}\n{"b": \n{"c": 3}\n', "line 2 is not JSON: Expecting value at column 7"),
    (b'{"a": 1}\n[1, 2]\n', "line 2 is JSON but not an object"),
    (b'{"a": 1}\n{"b": "\xff"}\n', "line 2 is not UTF-8 text (invalid start byte at byte 7 of the line)"),
    (b'{"a": 1}\n{"step": 5, "lo', "line 2 is not JSON"),
])
def test_jsonl_problem_names_the_first_bad_line(tmp_path, content, problem):
    path = tmp_path / "f.jsonl"
    path.write_bytes(content)
    found = jsonl_problem(path, objects=True)
    assert found == problem if problem is None else problem in found
    # a last line without its newline is what a kill mid-append leaves: tolerated on request, never a middle line
    assert jsonl_problem(path, objects=True, cut_tail=True) == (None if content.endswith(b'"lo') else found)
