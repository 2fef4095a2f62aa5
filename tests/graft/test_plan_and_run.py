"""The Titanesque plan expands to the seed's 33 runs, and a grafted run trains end to end with a mu schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archlab.plan import RunDir, expand, load_plan
from archlab.plan.runner import run_one
from archlab.plan.schema import RunConfig

PLAN = Path(__file__).parents[2] / "plans" / "titanesque_v2.yaml"


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_titanesque_plan_lists_33_unique_runs(profile):
    specs = expand(load_plan(PLAN), profile=profile)
    assert len(specs) == 33
    by_section: dict[str, int] = {}
    for spec in specs:
        for section in spec.sections:
            by_section[section] = by_section.get(section, 0) + 1
    assert sorted(by_section.values()) == [2, 5, 12, 18]  # core, no-LoRA, operator modes, LiZA sweeps
    for spec in specs:
        graft = spec.config.graft
        rule = (32, 64) if profile == "full" else (8, 16)  # smoke scales the chunks with its short sequences
        assert graft.chunk_size == (rule[0] if graft.operator.startswith("delta_product") else rule[1])
        assert spec.config.train.seed == 42 and spec.config.data.split_seed == 42
    assert sum(s.config.graft.bidirectional for s in specs) == 2  # Dream, both operators


def test_full_profile_uses_the_seed_models():
    specs = expand(load_plan(PLAN), profile="full")
    models = {s.config.model.pretrained: s.config.model.load_in_4bit for s in specs}
    assert models == {"meta-llama/Llama-3.2-1B": False, "Qwen/Qwen2.5-1.5B": False, "apple/OpenELM-1_1B": False,
                      "mistralai/Mistral-7B-v0.3": True, "allenai/OLMoE-1B-7B-0924": True,
                      "Dream-org/Dream-v0-Base-7B": True}
    data = specs[0].config.data
    assert (data.source, data.max_length, data.fraction, data.test_samples) == ("yahma/alpaca-cleaned", 386, 0.1, 2)


def test_a_grafted_run_trains_with_a_cyclic_mu_schedule(corpus_dir, tmp_path):
    config = RunConfig.parse({
        "model": {"hf_config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 48,
                                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}},
        "data": {"source": str(corpus_dir), "tokenizer": "bytes", "block_size": 32},
        "graft": {"operator": "delta_product", "chunk_size": 8, "eval_mag_weight": 1.0},
        "train": {"max_steps": 3, "per_device_train_batch_size": 2, "logging_steps": 1,
                  "schedules": {"mag_weight": {"type": "cyclic", "values": [0.0, 1.0]}}},
        "eval": [{"name": "loss", "max_examples": 4}, {"name": "generate_samples", "num_prompts": 1,
                                                     "max_new_tokens": 4}],
    })
    run = RunDir(tmp_path / "run")
    outcome = run_one(config, run)
    assert outcome.status == "done", outcome.message
    logged = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert [r["schedule/mag_weight"] for r in logged if "loss" in r] == [0.0, 1.0, 0.0]
