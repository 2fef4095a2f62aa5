"""Seed 002's recipe keys: staged (epoch-piecewise) gradient clipping, the square-root batch rule, early stopping
with a minimum improvement."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from tests.conftest import TINY_MODEL

from archlab.data import DataConfig, build_data
from archlab.errors import ArchlabError
from archlab.models.spec import ModelConfig, build_model
from archlab.train import ScheduleSpec, TrainConfig, Trainer
from archlab.train.config import LrScaling, scaled_learning_rate
from archlab.train.schedules import build_schedule, resolve_eval_value

STAGED = {"type": "piecewise", "boundaries": [10, 30], "values": [0.5, 1.0, 2.0], "unit": "epoch"}


@pytest.mark.parametrize(("step", "expected"), [(0, 0.5), (69, 0.5), (70, 1.0), (209, 1.0), (210, 2.0), (10**6, 2.0)])
def test_staged_clipping_changes_at_the_epoch_edges(step, expected):
    """0.5 for epochs < 10, 1.0 for epochs < 30, then 2.0 (7 optimizer steps per epoch here)."""
    assert build_schedule(ScheduleSpec(**STAGED), steps_per_epoch=7)(step) == expected


def test_piecewise_by_step_and_its_settled_value():
    schedule = build_schedule(ScheduleSpec(type="piecewise", boundaries=[3], values=[1.0, 4.0]))
    assert [schedule(s) for s in range(5)] == [1.0, 1.0, 1.0, 4.0, 4.0]
    assert resolve_eval_value(ScheduleSpec(**STAGED), max_steps=100) == 2.0


@pytest.mark.parametrize(("spec", "message"), [
    ({"type": "piecewise", "values": [1.0]}, "needs boundaries"),
    ({"type": "piecewise", "boundaries": [1, 2], "values": [1.0, 2.0]}, "one more value than boundaries"),
    ({"type": "piecewise", "boundaries": [5, 2], "values": [1.0, 2.0, 3.0]}, "ascending"),
])
def test_bad_piecewise_schedules_are_one_clear_error(spec, message):
    with pytest.raises(ArchlabError, match=message):
        build_schedule(ScheduleSpec(**spec))


def test_the_loop_clips_with_the_scheduled_norm(tmp_path, corpus_dir):
    data = build_data(DataConfig(source=str(corpus_dir), tokenizer="bytes", block_size=32))
    torch.manual_seed(0)
    model = build_model(ModelConfig(config=dict(TINY_MODEL)), vocab_size=len(data.tokenizer))
    per_epoch = len(data.train) // 8
    cfg = TrainConfig(max_steps=per_epoch + 2, per_device_train_batch_size=8, logging_steps=1, learning_rate=1e-3,
                      schedules={"max_grad_norm": {"type": "piecewise", "boundaries": [1], "values": [1e-4, 5.0],
                                                   "unit": "epoch"}})
    trainer = Trainer(model, data, cfg, tmp_path)
    used = []
    clip = trainer.accelerator.clip_grad_norm_

    def recording_clip(parameters, max_norm, *args, **kwargs):
        used.append(max_norm)
        return clip(parameters, max_norm, *args, **kwargs)

    trainer.accelerator.clip_grad_norm_ = recording_clip
    trainer.fit()
    assert used == [1e-4] * per_epoch + [5.0, 5.0]
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["schedule/max_grad_norm"] for r in logged if "schedule/max_grad_norm" in r] == used


def test_square_root_batch_rule_gives_the_seeds_pairs():
    """The seed's rule: batch 32 at 1e-4 scaled by sqrt(batch / 32): L4 2048 -> 8e-4, A100 4096 -> 1.13e-3 (the
    seed rounded to 1.1e-3). Its T4 runs (512, 1e-4) predate the rule; the rule would give 4e-4 there."""
    base = LrScaling(base_learning_rate=1e-4, base_batch_size=32)
    assert scaled_learning_rate(base, 2048) == pytest.approx(8e-4)
    assert scaled_learning_rate(base, 4096) == pytest.approx(1.1e-3, rel=0.03)
    assert scaled_learning_rate(base, 512) == pytest.approx(4e-4)
    assert scaled_learning_rate(LrScaling(base_learning_rate=1e-4, base_batch_size=32, rule="linear"), 64) == \
        pytest.approx(2e-4)


def test_lr_scaling_sets_learning_rate_from_the_effective_batch_and_re_reads_equal():
    cfg = TrainConfig(per_device_train_batch_size=512, gradient_accumulation_steps=4,
                      lr_scaling={"base_learning_rate": 1e-4, "base_batch_size": 32})
    assert cfg.learning_rate == pytest.approx(8e-4)
    assert TrainConfig(**cfg.to_dict()).learning_rate == cfg.learning_rate  # a saved config.yaml parses again
    with pytest.raises(ValueError, match="disagrees with lr_scaling"):
        TrainConfig(per_device_train_batch_size=2048, learning_rate=1e-3,
                    lr_scaling={"base_learning_rate": 1e-4, "base_batch_size": 32})


def test_early_stopping_threshold_counts_small_gains_as_no_improvement(tmp_path, corpus_dir, monkeypatch):
    import archlab.train.loop as loop

    data = build_data(DataConfig(source=str(corpus_dir), tokenizer="bytes", block_size=32))
    model = build_model(ModelConfig(config=dict(TINY_MODEL)), vocab_size=len(data.tokenizer))

    def stops_after(threshold):
        losses = iter([3.0, 2.9995, 2.999, 2.5, 2.4996, 2.4992])
        monkeypatch.setattr(loop, "validation_loss", lambda *a, **k: SimpleNamespace(loss=next(losses),
                                                                                   bits_per_byte=None))
        cfg = TrainConfig(max_steps=6, per_device_train_batch_size=4, early_stopping_patience=2,
                          early_stopping_threshold=threshold)
        folder = tmp_path / str(threshold)
        folder.mkdir()
        trainer = Trainer(model, data, cfg, folder)
        for i in range(6):
            trainer.evaluate()
            if trainer.state.stop_reason:
                return i
        return None

    assert stops_after(1e-3) == 2  # 2.9995 and 2.999 gain < 1e-3 on 3.0: two evaluations without improvement
    assert stops_after(0.0) is None  # every decrease counts


def test_runs_of_one_process_may_change_mixed_precision(tmp_path, corpus_dir):
    """A plan's runs share the process: an fp32 run then a bf16 run (seed 002's FP16 arm on CPU) both build."""
    data = build_data(DataConfig(source=str(corpus_dir), tokenizer="bytes", block_size=32))
    for i, bf16 in enumerate((False, True, False)):
        model = build_model(ModelConfig(config=dict(TINY_MODEL)), vocab_size=len(data.tokenizer))
        trainer = Trainer(model, data, TrainConfig(max_steps=1, per_device_train_batch_size=4, bf16=bf16),
                          tmp_path / str(i))
        assert trainer.accelerator.mixed_precision == ("bf16" if bf16 else "no")
