"""NaN/Inf policy, simulated CUDA OOM back-off, parameter schedules, optimizers."""

from __future__ import annotations

import json

import pytest
import torch
from tests.conftest import TINY_MODEL, tiny_run_config
from torch import nn

from archlab.data import DataConfig, build_data
from archlab.errors import ArchlabError
from archlab.models.spec import ModelConfig, build_model
from archlab.plan import RunConfig, RunDir
from archlab.plan.runner import run_one
from archlab.train import Callback, Diverged, ScheduleSpec, TrainConfig, Trainer
from archlab.train.schedules import build_schedule


def _setup(corpus_dir, **train):
    data = build_data(DataConfig(source=str(corpus_dir), tokenizer="bytes", block_size=32))
    torch.manual_seed(0)
    model = build_model(ModelConfig(config=dict(TINY_MODEL)), vocab_size=len(data.tokenizer))
    cfg = TrainConfig(**{"max_steps": 6, "per_device_train_batch_size": 4, "logging_steps": 1, **train})
    return model, data, cfg


def _poison_loss_on_calls(model: nn.Module, calls: set[int]) -> None:
    forward, count = model.forward, {"n": 0}

    def poisoned(*args, **kwargs):
        out = forward(*args, **kwargs)
        count["n"] += 1
        if count["n"] in calls:
            out.loss = out.loss * float("nan")
        return out

    model.forward = poisoned


def test_nan_policy_stop_marks_the_run_diverged_and_never_checkpoints_nan(tmp_path, corpus_dir):
    class PoisonWeights(Callback):
        def on_step_begin(self, trainer):
            if trainer.state.step == 3:
                with torch.no_grad():
                    next(trainer.model.parameters()).fill_(float("nan"))

    config = RunConfig.parse(tiny_run_config(corpus_dir, max_steps=6, save_steps=1))
    run = RunDir(tmp_path / "run")
    outcome = run_one(config, run, [PoisonWeights()])
    assert outcome.status == "diverged"
    status = run.status()
    assert status["status"] == "diverged" and "at step 4" in status["message"]
    assert "nan_policy=skip" in status["message"]
    assert [p.name for p in sorted((run.path / "checkpoints").iterdir())] == ["step-0000002", "step-0000003"]


def test_nan_policy_skip_drops_the_step_and_counts_it(tmp_path, corpus_dir):
    model, data, cfg = _setup(corpus_dir, nan_policy="skip")
    _poison_loss_on_calls(model, {3})
    state = Trainer(model, data, cfg, tmp_path).fit()
    assert state.step == 6 and state.skipped_steps == 1 and state.position == 7
    assert all(torch.isfinite(p).all() for p in model.parameters())
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("step skipped" in r.get("event", "") for r in events)


def test_nan_policy_stop_raises_diverged_in_the_trainer(tmp_path, corpus_dir):
    model, data, cfg = _setup(corpus_dir)
    _poison_loss_on_calls(model, {2})
    with pytest.raises(Diverged, match="loss became nan at step 2"):
        Trainer(model, data, cfg, tmp_path).fit()


def test_simulated_cuda_oom_halves_the_micro_batch_and_keeps_the_effective_batch(tmp_path, corpus_dir):
    model, data, cfg = _setup(corpus_dir, per_device_train_batch_size=8, max_steps=4)
    forward = model.forward

    def small_batches_only(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(*args, **kwargs)

    model.forward = small_batches_only
    state = Trainer(model, data, cfg, tmp_path / "oom").fit()
    assert (state.micro_batch_size, state.accumulation, state.oom_backoffs) == (2, 4, 2)

    reference, _, ref_cfg = _setup(corpus_dir, per_device_train_batch_size=2, gradient_accumulation_steps=4,
                                   max_steps=4)
    Trainer(reference, data, ref_cfg, tmp_path / "ref").fit()
    for (name, a), (_, b) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    events = (tmp_path / "oom" / "metrics.jsonl").read_text()
    assert "micro-batch halved to 2" in events


def test_other_errors_are_not_mistaken_for_oom(tmp_path, corpus_dir):
    model, data, cfg = _setup(corpus_dir)

    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    model.forward = broken
    with pytest.raises(RuntimeError, match="shape mismatch"):
        Trainer(model, data, cfg, tmp_path).fit()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"type": "constant", "value": 0.5}, [0.5, 0.5, 0.5, 0.5]),
        ({"type": "linear", "start": 0.0, "end": 0.5, "steps": 2}, [0.0, 0.25, 0.5, 0.5]),
        ({"type": "cyclic", "values": [0.0, 1.0]}, [0.0, 1.0, 0.0, 1.0]),
        ({"type": "warmup_decay", "peak": 1.0, "warmup_steps": 2, "decay_start": 2, "decay_end": 4, "final": 0.0},
         [0.5, 1.0, 1.0, 0.5]),
    ],
)
def test_schedule_values(spec, expected):
    schedule = build_schedule(ScheduleSpec(**spec))
    assert [schedule(s) for s in range(4)] == expected


def test_schedule_with_missing_field_is_one_clear_error():
    with pytest.raises(ArchlabError, match="schedule type 'linear' needs end, steps"):
        build_schedule(ScheduleSpec(type="linear", start=0.0))
    with pytest.raises(ArchlabError, match="unknown schedule 'cyclc'.*did you mean 'cyclic'"):
        build_schedule(ScheduleSpec(type="cyclc"))


def test_trainer_sets_scheduled_attributes_each_step_and_logs_them(tmp_path, corpus_dir):
    model, data, cfg = _setup(corpus_dir, schedules={"gate": {"type": "cyclic", "values": [0.0, 0.5]}})

    class Gate(nn.Module):
        scheduled_attributes = ("gate",)
        gate = -1.0

    model.gate_holder = Gate()
    seen = []

    class Watch(Callback):
        def on_step_begin(self, trainer):
            seen.append(model.gate_holder.gate)

    Trainer(model, data, cfg, tmp_path, callbacks=[Watch()]).fit()
    assert seen == [0.0, 0.5, 0.0, 0.5, 0.0, 0.5]
    logged = [json.loads(x).get("schedule/gate") for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [v for v in logged if v is not None] == seen


def test_schedule_target_that_no_module_declares_is_an_error(tmp_path, corpus_dir):
    model, data, cfg = _setup(corpus_dir, schedules={"mag_weight": {"type": "constant", "value": 0.5}})
    with pytest.raises(ArchlabError, match="targets 'mag_weight', but no module"):
        Trainer(model, data, cfg, tmp_path)


def test_muon_hybrid_routes_hidden_matrices_to_muon_and_the_rest_to_adamw(tmp_path, corpus_dir):
    model, data, cfg = _setup(corpus_dir, optim="muon", warmup_steps=2, max_steps=8, learning_rate=3e-3)
    trainer = Trainer(model, data, cfg, tmp_path)
    muon, adamw = trainer.optimizer.optimizer.optimizers
    muon_ids = {id(p) for g in muon.param_groups for p in g["params"]}
    assert id(model.model.layers[0].mixer.q_proj.weight) in muon_ids
    assert id(model.model.embed_tokens.weight) not in muon_ids
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])
    first = None
    trainer.fit()
    losses = [json.loads(x)["loss"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    first = losses[0]
    assert losses[-1] < first - 0.3  # it learns (warmup once froze the Muon learning rate at 0)


def test_missing_tracker_package_is_one_clear_error(tmp_path, corpus_dir):
    model, data, cfg = _setup(corpus_dir, report_to=["tensorbord"])
    with pytest.raises(ArchlabError, match="unknown tracker 'tensorbord'"):
        Trainer(model, data, cfg, tmp_path)
