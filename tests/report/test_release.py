"""archlab release / release --verify and the hub push with its model card, on a run folder written by hand."""

from __future__ import annotations

import pytest
import yaml
from tests.conftest import cli as run_cli

from archlab.errors import ArchlabError
from archlab.rundir import RunDir

CONFIG = {"model": {"arch": "transformer", "config": {"hidden_size": 32}},
          "data": {"source": "embedded:shakespeare", "tokenizer": "bytes", "block_size": 32},
          "train": {"max_steps": 4, "optim": "adamw", "learning_rate": 0.003, "push_to_hub": False}}


@pytest.fixture
def done_run(tmp_path):
    run = RunDir(tmp_path / "runs" / "plan" / "tiny-abc123")
    run.path.mkdir(parents=True)
    run.write_config(CONFIG)
    run.write_env({"torch": "2.x", "git_sha": "abc"})
    run.metrics.append({"step": 4, "loss": 3.0})
    run.write_samples([{"prompt": "To be", "completion": " or not"}])
    run.write_eval("loss", {"eval": "loss", "metrics": {"loss": 3.1, "bits_per_byte": 4.4}, "n": 96,
                            "ci95": {"loss": [3.0, 3.2]}, "details": {}}, [{"i": 0, "nll": 3.1}])
    run.model_dir.mkdir()
    (run.model_dir / "config.json").write_text("{}")
    from safetensors.torch import save_file
    save_file({"w": __import__("torch").zeros(4, 4)}, str(run.model_dir / "model.safetensors"))
    run.set_status("done", step=4, message="max_steps", best_step=3, best_metric=3.05)
    return run


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    return run_cli(monkeypatch, capsys, *args, width=200)


def test_release_bundles_the_run_with_a_manifest_and_verify_catches_any_change(monkeypatch, capsys, tmp_path, done_run):
    out = tmp_path / "bundle"
    code, text = cli(monkeypatch, capsys, "release", "plan/tiny", "--runs-dir", str(tmp_path / "runs"), "--out", str(out))
    assert code == 0, text
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {"MANIFEST.sha256", "README.md", "config.yaml", "env.json", "metrics.jsonl", "samples.jsonl",
                     "status.json", "eval/loss.json", "eval/loss.items.jsonl", "model/config.json",
                     "model/model.safetensors"}
    readme = (out / "README.md").read_text()
    assert "| loss.loss | 3.1 | [3, 3.2] | 96 |" in readme and "MANIFEST.sha256" in readme
    assert "best checkpoint's weights (step 3" in readme
    assert yaml.safe_load(readme.split("---")[1])["library_name"] == "transformers"
    code, text = cli(monkeypatch, capsys, "release", "--verify", str(out))
    assert code == 0 and "ok: every file" in text
    (out / "eval" / "loss.json").write_text("{}")
    (out / "extra.txt").write_text("x")
    (out / "samples.jsonl").unlink()
    code, text = cli(monkeypatch, capsys, "release", "--verify", str(out))
    assert code == 2 and "changed: eval/loss.json" in text and "missing: samples.jsonl" in text
    assert "not in the manifest: extra.txt" in text
    code, text = cli(monkeypatch, capsys, "release", "plan/tiny", "--runs-dir", str(tmp_path / "runs"), "--out", str(out))
    assert code == 2 and "not empty" in text


def test_a_truncated_file_is_refused_by_release_and_reported_by_verify(monkeypatch, capsys, tmp_path, done_run):
    """A checksum says a file is what was bundled, not that it loads: release and --verify parse what they can."""
    from archlab.report.release import MANIFEST, _sha256

    runs = str(tmp_path / "runs")
    loss = done_run.path / "eval" / "loss.json"
    good = loss.read_text()
    loss.write_text(good[: len(good) // 2])
    code, text = cli(monkeypatch, capsys, "release", "plan/tiny", "--runs-dir", runs, "--out", str(tmp_path / "b1"))
    assert code == 2 and "eval/loss.json is damaged" in text and "Traceback" not in text
    assert not (tmp_path / "b1").exists()
    loss.write_text(good)
    with (done_run.path / "metrics.jsonl").open("a") as f:  # a kill mid-append: readers skip it, release too
        f.write('{"step": 5, "lo')
    out = tmp_path / "b2"
    assert cli(monkeypatch, capsys, "release", "plan/tiny", "--runs-dir", runs, "--out", str(out))[0] == 0
    weights = out / "model" / "model.safetensors"
    old_digest = _sha256(weights)
    weights.write_bytes(weights.read_bytes()[:-16])  # cut, and the manifest rewritten to match
    manifest = out / MANIFEST
    manifest.write_text(manifest.read_text().replace(old_digest, _sha256(weights)))
    code, text = cli(monkeypatch, capsys, "release", "--verify", str(out))
    assert code == 2 and "damaged: model/model.safetensors" in text and "changed:" not in text


def test_release_refuses_an_unfinished_run(tmp_path, done_run):
    from archlab.report.release import build_release

    done_run.set_status("failed", message="boom")
    with pytest.raises(ArchlabError, match="is failed, not done"):
        build_release(done_run.path, tmp_path / "b")


def test_push_offline_is_one_line_and_the_run_stays_done(monkeypatch, done_run):
    from archlab.plan.runner import Outcome, _push
    from archlab.plan.schema import RunConfig

    monkeypatch.setattr("archlab.offline.hub_reachable", lambda *a, **k: False)
    config = RunConfig.parse({**CONFIG, "train": {**CONFIG["train"], "push_to_hub": True}}, where="t")
    outcome = _push(config, done_run, Outcome(done_run.id, "done", "max_steps"))
    assert outcome.status == "done" and "hub is not reachable" in outcome.message
    status = done_run.status()
    assert status["status"] == "done" and status["step"] == 4 and "not reachable" in status["push"]


def test_push_uploads_the_model_and_a_model_card(monkeypatch, done_run):
    import huggingface_hub

    from archlab.plan.hub import push_run

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def whoami(self):
            return {"name": "me"}

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id))

        def upload_folder(self, folder_path, repo_id, **kw):
            calls.append(("folder", repo_id, sorted(p.name for p in __import__("pathlib").Path(folder_path).iterdir())))

        def upload_file(self, path_or_fileobj, path_in_repo, repo_id, **kw):
            calls.append(("file", repo_id, path_in_repo, path_or_fileobj.decode()))

    monkeypatch.setattr("archlab.offline.hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert push_run(done_run.path) == "me/tiny-abc123"
    assert calls[0] == ("create", "me/tiny-abc123")
    assert calls[1] == ("folder", "me/tiny-abc123", ["config.json", "model.safetensors"])
    _, _, name, card = calls[2]
    assert name == "README.md" and "| loss.loss | 3.1 | [3, 3.2] | 96 |" in card and "tags:" in card
