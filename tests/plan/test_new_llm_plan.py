"""plans/new_llm.yaml (seed 002) expands to the seed's runs with its batch / learning-rate / precision pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from archlab.plan import expand, load_plan

PLAN = Path(__file__).resolve().parents[2] / "plans" / "new_llm.yaml"


def runs(profile):
    return {spec.id.rsplit("-", 1)[0]: spec.config for spec in expand(load_plan(PLAN), profile)}


@pytest.mark.parametrize(("profile", "batch", "lr", "fp16"), [
    ("t4", 512, 1e-4, False), ("l4", 2048, 8e-4, True), ("full", 2048, 8e-4, True), ("a100", 4096, 1.131e-3, True)])
def test_gpu_profiles_use_the_seeds_batch_and_square_root_learning_rate(profile, batch, lr, fp16):
    configs = runs(profile)
    assert len(configs) == 10
    l6 = configs["new_llm-L6"]
    assert l6.train.per_device_train_batch_size == batch
    assert l6.train.learning_rate == pytest.approx(lr, rel=1e-3)
    assert l6.train.fp16 is fp16
    # the FP16 section's other arm (its own arm is the sweep's L=6 run, shown in both sections)
    other = configs["new_llm-L6-fp32" if fp16 else "new_llm-L6-fp16"]
    assert other.train.fp16 is not fp16
    # the advanced model: lr 4e-4 at batch 2048, scaled by the same rule
    assert configs["new_llm-L12-advanced"].train.learning_rate == pytest.approx(4e-4 * (batch / 2048) ** 0.5)
    assert configs["new_llm-L12-advanced"].model.config["context_dim"] == 512
    assert l6.data.source == "wikitext" and l6.data.name == "wikitext-2-raw-v1"
    dolly = configs["new_llm-L1-dolly"]
    assert dolly.data.source == "databricks/databricks-dolly-15k" and dolly.data.name is None
    assert (dolly.data.max_length, dolly.data.word_level.unit, dolly.train.early_stopping_patience) == (128, "record", 20)


def test_every_run_has_the_seeds_recipe_and_the_smoke_profile_runs_offline():
    configs = runs("smoke")
    assert sorted(configs) == sorted(["new_llm-L1", "new_llm-L4", "new_llm-L5", "new_llm-L6", "new_llm-L7", "lstm",
                                      "gpt", "new_llm-L12-advanced", "new_llm-L6-fp16", "new_llm-L1-dolly"])
    for config in configs.values():
        assert config.data.tokenizer == "word_level" and config.data.word_level.vocab_size == 1000
        assert config.data.source.startswith("embedded:")
        assert config.train.optim == "adamw" and config.train.weight_decay == 0.0  # Adam
        clip = config.train.schedules["max_grad_norm"]
        assert (clip.type, clip.boundaries, clip.values, clip.unit) == ("piecewise", [10, 30], [0.5, 1.0, 2.0],
                                                                        "epoch")
        assert config.train.early_stopping_threshold == 1e-3
    assert configs["new_llm-L6-fp16"].train.bf16 and not configs["new_llm-L6-fp16"].train.fp16  # CPU
    assert configs["new_llm-L1-dolly"].data.template == "labeled"
