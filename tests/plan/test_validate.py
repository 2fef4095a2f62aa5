"""Plan-time checks accept the shipped plans and catch what only shows when a run starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import tiny_run_config

from archlab.errors import ArchlabError
from archlab.evals import EVALS
from archlab.models.spec import PLACEHOLDER_REVISION, ModelConfig, build_model
from archlab.plan import RunConfig, expand, load_plan
from archlab.plan.validate import check_run, validate_plan

PLANS = Path(__file__).parents[2] / "plans"


@pytest.mark.parametrize("name", ["quickstart", "titanesque_v2"])
def test_the_shipped_plans_pass_their_checks(name):
    plan = load_plan(PLANS / f"{name}.yaml")
    validate_plan(plan, expand(plan))


def test_every_registered_eval_declares_its_metrics():
    assert all(EVALS.get(name).metrics for name in EVALS)
    assert EVALS.get("niah").gives("rank_accuracy@1024") and not EVALS.get("loss").gives("bpb")


def _config(corpus_dir: Path, **model) -> RunConfig:
    config = tiny_run_config(corpus_dir)
    config["model"] = {**config["model"], **model}
    return RunConfig.parse(config)


def test_remote_code_needs_a_real_pinned_revision(corpus_dir):
    with pytest.raises(ArchlabError, match="pin the code you reviewed"):
        _config(corpus_dir, trust_remote_code=True, revision="main")
    placeholder = _config(corpus_dir, pretrained="org/model", trust_remote_code=True, revision=PLACEHOLDER_REVISION)
    with pytest.raises(ArchlabError, match="is the placeholder 0000"):
        check_run(placeholder, "run x")


def test_the_revision_reaches_from_pretrained(monkeypatch):
    import archlab.models.pretrained as pretrained

    seen = {}

    def fake(name, **kwargs):
        seen.update(kwargs, name=name)
        raise OSError("offline")

    monkeypatch.setattr(pretrained.AutoModelForCausalLM, "from_pretrained", fake)
    with pytest.raises(ArchlabError):
        build_model(ModelConfig(pretrained="org/model", trust_remote_code=True, revision="a" * 40))
    assert seen["revision"] == "a" * 40 and seen["trust_remote_code"] is True


def test_an_mc_task_with_code_runs_only_with_allow_code(tmp_path, corpus_dir):
    task = tmp_path / "task.yaml"
    task.write_text("task: mine\nprocess_docs: !function utils.process\n")
    config = tiny_run_config(corpus_dir)
    config["eval"] = [{"name": "mc", "task": str(task), "allow_code": True}]
    check_run(RunConfig.parse(config), "run x")
    config["eval"] = [{"name": "mc", "task": str(task)}]
    with pytest.raises(ArchlabError, match="set allow_code: true"):
        check_run(RunConfig.parse(config), "run x")


def test_a_local_pretrained_base_is_built_on_meta_from_its_config_only(tmp_path, corpus_dir):
    from transformers import LlamaConfig

    base = tmp_path / "base"
    LlamaConfig(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2).save_pretrained(base)  # a config.json and no weights at all
    config = tiny_run_config(corpus_dir)
    config["model"] = {"pretrained": str(base)}
    config["graft"] = {"layers": [0, 1]}
    check_run(RunConfig.parse(config), "run x")
    config["graft"] = {"layers": [5]}
    with pytest.raises(ArchlabError, match=r"graft.layers \[5\] out of range"):
        check_run(RunConfig.parse(config), "run x")
    config["model"] = {"pretrained": str(tmp_path / "missing")}
    with pytest.raises(ArchlabError, match="no such folder"):
        check_run(RunConfig.parse(config), "run x")
