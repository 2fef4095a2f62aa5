"""The mu a grafted run is evaluated with is explicit, recorded in its config, and the same in-run and later."""

from __future__ import annotations

import json

import pytest
import yaml

from archlab.errors import ArchlabError
from archlab.plan import RunConfig, RunDir
from archlab.plan.runner import evaluate_run_dir, run_one

SCHEDULES = {
    "constant": ({"type": "constant", "value": 0.125}, None, 0.125),
    "linear": ({"type": "linear", "start": 0.0, "end": 0.5, "steps": 10}, None, 0.5 * 3 / 10),  # value at step 3
    "cyclic": ({"type": "cyclic", "values": [0.0, 1.0]}, 0.5, 0.5),
}


def grafted_config(corpus_dir, schedule: dict, eval_mu: float | None) -> dict:
    graft = {"operator": "delta_rule", "chunk_size": 8, "lora": True, "lora_r": 2}
    if eval_mu is not None:
        graft["eval_mag_weight"] = eval_mu
    return {
        "model": {"hf_config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 48,
                                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}},
        "data": {"source": str(corpus_dir), "tokenizer": "bytes", "block_size": 32, "validation_fraction": 0.1},
        "graft": graft,
        "train": {"max_steps": 4, "per_device_train_batch_size": 2, "logging_steps": 2, "learning_rate": 1e-3,
                  "schedules": {"mag_weight": schedule}},
        "eval": [{"name": "loss", "max_examples": 4}],
    }


@pytest.mark.parametrize("kind", SCHEDULES)
def test_archlab_eval_reproduces_the_in_run_loss_exactly(kind, corpus_dir, tmp_path):
    schedule, eval_mu, expected_mu = SCHEDULES[kind]
    config = RunConfig.parse(grafted_config(corpus_dir, schedule, eval_mu))
    assert config.graft.eval_mag_weight == pytest.approx(expected_mu)
    run = RunDir(tmp_path / "run")
    assert run_one(config, run).status == "done"
    recorded = yaml.safe_load((run.path / "config.yaml").read_text())
    assert recorded["graft"]["eval_mag_weight"] == pytest.approx(expected_mu)
    in_run = json.loads((run.path / "eval" / "loss.json").read_text())["metrics"]
    [again] = evaluate_run_dir(run.path, ["loss"])
    assert again["metrics"] == in_run


def test_a_cyclic_schedule_without_an_evaluation_mu_is_an_error(corpus_dir):
    with pytest.raises(ArchlabError, match="cyclic: say which value evaluation uses with graft.eval_mag_weight"):
        RunConfig.parse(grafted_config(corpus_dir, SCHEDULES["cyclic"][0], None))
