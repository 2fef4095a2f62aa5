"""``train.fsdp``: FSDP2 over gloo on 2 CPU processes trains what 1 process trains, and its checkpoints
resume at another world size, with or without sharding (and the other way round)."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file
from tests.train.test_distributed import _assert_close, _config, _losses, _torchrun

from archlab.plan import RunConfig, RunDir
from archlab.plan.runner import run_one
from archlab.train.config import TrainConfig
from archlab.train.fsdp import parse_options


def _fsdp(config: dict) -> dict:
    return {**config, "train": {**config["train"], "fsdp": "full_shard auto_wrap"}}


def _weights(folder):
    return load_file(folder / "model" / "model.safetensors")


def test_fsdp_options_are_hf_names_and_bad_ones_are_named():
    assert parse_options("full_shard auto_wrap") == ["full_shard", "auto_wrap"]
    assert parse_options(["shard_grad_op", "offload"]) == ["shard_grad_op", "offload"]
    assert parse_options("") == []
    with pytest.raises(ValueError, match="unknown fsdp option 'ful_shard'"):
        parse_options("ful_shard")
    with pytest.raises(ValueError, match="Muon orthogonalises whole weight matrices"):
        TrainConfig(fsdp="full_shard", optim="muon")


@pytest.mark.slow  # three torchrun launches of 2 ranks each
def test_two_fsdp_ranks_equal_one_process_and_checkpoints_resume_at_any_world_size(tmp_path, corpus_dir):
    reference = RunDir(tmp_path / "one")
    assert run_one(RunConfig.parse(_config(corpus_dir, batch=8)), reference).status == "done"

    sharded = tmp_path / "fsdp"
    done = _torchrun(tmp_path, _fsdp(_config(corpus_dir, batch=4)), sharded)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RANK 0 done" in done.stdout and "RANK 1 done" in done.stdout, done.stdout
    _assert_close(_weights(sharded), _weights(reference.path))
    assert [r["step"] for r in _losses(sharded)] == [1, 2, 3, 4, 5, 6]  # rank 0 alone logged
    events = [r.get("event", "") for r in map(json.loads, (sharded / "metrics.jsonl").read_text().splitlines())]
    assert "fsdp: parameters sharded over 2 ranks in 3 units (full_shard auto_wrap)" in events  # 2 blocks + root
    env = json.loads((sharded / "env.json").read_text())
    assert env["processes"] == 2 and env["data_parallel"] == "fsdp"
    assert sorted(p.name for p in (sharded / "checkpoints").iterdir()) == ["step-0000003", "step-0000006"]
    # the checkpoint is the full model, named as a 1-process run names it
    assert load_file(sharded / "checkpoints" / "step-0000003" / "model.safetensors").keys() == \
        load_file(reference.path / "checkpoints" / "step-0000003" / "model.safetensors").keys()

    # FSDP checkpoint (optimizer keyed by parameter name) -> 1 process without sharding
    to_one = tmp_path / "fsdp-to-one"
    shutil.copytree(sharded / "checkpoints" / "step-0000003", to_one / "checkpoints" / "step-0000003")
    assert run_one(RunConfig.parse(_config(corpus_dir, batch=8)), RunDir(to_one)).status == "done"
    _assert_close(_weights(to_one), _weights(reference.path))

    # 1-process checkpoint (optimizer keyed by position) -> 2 FSDP ranks
    to_fsdp = tmp_path / "one-to-fsdp"
    shutil.copytree(reference.path / "checkpoints" / "step-0000003", to_fsdp / "checkpoints" / "step-0000003")
    resumed = _torchrun(tmp_path, _fsdp(_config(corpus_dir, batch=4)), to_fsdp)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = [r.get("event", "") for r in map(json.loads, (to_fsdp / "metrics.jsonl").read_text().splitlines())]
    assert any("resumed from step-0000003" in e for e in events), events
    _assert_close(_weights(to_fsdp), _weights(reference.path))


def test_archlab_plan_names_a_block_class_fsdp_cannot_find(corpus_dir):
    from archlab.errors import ArchlabError
    from archlab.plan import PlanConfig, expand
    from archlab.plan.validate import validate_plan

    config = _config(corpus_dir, batch=4)
    config["train"].update(fsdp="full_shard auto_wrap", fsdp_config={"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]})
    plan = PlanConfig.parse({"name": "sharded", "defaults": config, "include": [{"name": "one"}]})
    with pytest.raises(ArchlabError, match=r"\['LlamaDecoderLayer'\] matches no module of this model; its module "
                                           r"classes: .*DecoderBlock"):
        validate_plan(plan, expand(plan))
    config["train"]["fsdp_config"] = {}  # default: the model's _no_split_modules
    plan = PlanConfig.parse({"name": "sharded", "defaults": config, "include": [{"name": "one"}]})
    validate_plan(plan, expand(plan))
