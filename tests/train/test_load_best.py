"""train.load_best_model_at_end: the run's model/ holds the weights of the best evaluation; status says its step."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import tiny_run_config
from transformers import AutoModelForCausalLM

from archlab.models.scoring import LossTotals
from archlab.plan import RunConfig, RunDir
from archlab.plan.runner import run_one
from archlab.train import Callback, TrainConfig
from archlab.train import loop as loop_module

LOSSES = [3.0, 2.0, 2.5, 2.7]  # evaluations at steps 1..4: the best is step 2


class RecordWeights(Callback):
    def __init__(self):
        self.at: dict[int, dict[str, torch.Tensor]] = {}

    def on_evaluate(self, trainer, metrics):
        self.at[trainer.state.step] = {k: v.detach().clone() for k, v in trainer.unwrapped.state_dict().items()}


@pytest.fixture
def scripted_eval_loss(monkeypatch):
    calls = iter(LOSSES)
    monkeypatch.setattr(loop_module, "validation_loss",
                        lambda *a, **k: LossTotals(nll=next(calls) * 10, tokens=10))


@pytest.mark.parametrize("load_best", [True, False])
def test_model_dir_is_the_best_evaluation(tmp_path, corpus_dir, scripted_eval_loss, load_best):
    config = RunConfig.parse(tiny_run_config(corpus_dir, max_steps=4, eval_steps=1, save_steps=2,
                                             load_best_model_at_end=load_best))
    run = RunDir(tmp_path / "run")
    recorder = RecordWeights()
    assert run_one(config, run, [recorder]).status == "done"
    saved = AutoModelForCausalLM.from_pretrained(run.model_dir).state_dict()
    expected = recorder.at[2 if load_best else 4]
    for name, tensor in saved.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)
    assert not torch.equal(recorder.at[2]["model.embed_tokens.weight"], recorder.at[4]["model.embed_tokens.weight"])
    status = run.status()
    assert (status.get("best_step"), status.get("best_metric")) == ((2, 2.0) if load_best else (None, None))
    assert [p.name for p in sorted((run.path / "checkpoints").iterdir()) if p.name.startswith("step-")][-1] \
        == "step-0000004"  # the last checkpoint stays the resume point


def test_save_steps_must_be_a_multiple_of_eval_steps():
    with pytest.raises(ValueError, match="multiple of eval_steps"):
        TrainConfig(load_best_model_at_end=True, eval_steps=500, save_steps=300)
