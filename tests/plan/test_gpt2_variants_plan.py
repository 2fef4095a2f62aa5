"""plans/gpt2_variants.yaml expands to the 13 runs its header states, with the seed's recipe in `full`, and one
of its smoke runs (the Duo-Predict one, the most involved) trains, evaluates and exports end to end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from archlab.config import parse_overrides
from archlab.plan import RunDir, expand, load_plan
from archlab.plan.runner import run_one

PLAN = Path(__file__).parents[2] / "plans" / "gpt2_variants.yaml"


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_plan_expands_to_the_count_in_its_header(profile):
    stated = int(re.search(r"^# (\d+) unique runs", PLAN.read_text(), re.M).group(1))
    specs = expand(load_plan(PLAN), profile=profile)
    assert len(specs) == stated == 13
    sections: dict[str, int] = {}
    for spec in specs:
        for section in spec.sections:
            sections[section] = sections.get(section, 0) + 1
    assert sections == {"Drift-Diffusion GPT-2": 4, "Parallel GPT-2": 4, "Rotating-Head GPT-2": 5,
                        "Duo-Predict GPT-2 (seq 512)": 2}
    for spec in specs:
        assert spec.config.model.arch == "gpt2_variants" and spec.config.data.tokenizer == "gpt2+mask"
        assert spec.config.train.load_best_model_at_end and spec.config.train.early_stopping_patience == 2
        evals = [e.name for e in spec.config.eval]
        assert evals == (["loss", "duo_predict"] if spec.config.model.config.get("duo_predict") else ["loss"])


def test_full_profile_is_the_seed_recipe():
    specs = {s.id.rsplit("-", 1)[0]: s.config for s in expand(load_plan(PLAN), profile="full")}
    base, duo = specs["s1024-baseline"], specs["s512-duo_predict"]
    assert base.model.config == {"n_layer": 24, "n_embd": 1024, "n_head": 16, "n_positions": 1024}
    assert (base.data.source, base.data.format, base.data.block_size) == (
        "BluebrainAI/wikitext-103-raw-v1-seq1024-tokenized-grouped", "tokenized", 1024)
    assert (duo.data.source, duo.data.block_size, duo.model.config["n_positions"]) == (
        "BluebrainAI/wikitext-103-raw-v1-seq512-tokenized-grouped", 512, 512)
    t = base.train
    assert (t.per_device_train_batch_size, t.num_train_epochs, t.learning_rate, t.lr_scheduler_type, t.warmup_ratio,
            t.weight_decay, t.bf16, t.gradient_checkpointing, t.eval_steps, t.save_steps, t.seed) == (
        64, 5, 1e-4, "linear", 0.1, 0.01, True, True, 500, 500, 42)
    assert specs["s1024-parallel_concat"].model.config["parallel"] == "concat"
    assert specs["s1024-rotating_gp_norm"].model.config == {**base.model.config, "rotation": "geometric",
                                                           "rotation_norm": True}


@pytest.mark.slow
def test_a_smoke_duo_predict_run_goes_end_to_end(tmp_path):
    overrides = parse_overrides(["train.max_steps=4", "train.eval_steps=2", "train.save_steps=2"])
    spec = next(s for s in expand(load_plan(PLAN), profile="smoke", overrides=overrides) if "duo_predict" in s.id)
    run = RunDir(tmp_path / spec.id)
    assert run_one(spec.config, run).status == "done"
    assert (run.model_dir / "config.json").exists()
    duo = run.eval_results()["duo_predict"]
    assert set(duo["metrics"]) == {"next_token_loss", "next_token_accuracy", "fill_loss", "fill_accuracy"}
    assert run.status()["best_step"] in (2, 4)
