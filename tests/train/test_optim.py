"""Optimizer groups: Muon's weight decay shrinks its matrices by the same factor per step as AdamW's, and
LoRA factors stay on AdamW."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import TINY_MODEL
from transformers import get_scheduler

from archlab.models.spec import ModelConfig, build_model
from archlab.train import TrainConfig
from archlab.train.optim import build_optimizer


def _lora_model_with_trained_mlp():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = build_model(ModelConfig(config=dict(TINY_MODEL)), vocab_size=64).double()  # exact shrink ratios
    model = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    for name, p in model.named_parameters():
        if ".mlp." in name:
            p.requires_grad_(True)
    return model


@pytest.mark.parametrize("muon_weight_decay", [None, 0.05])
def test_muon_and_adamw_groups_decay_as_configured_each_step(muon_weight_decay):
    model = _lora_model_with_trained_mlp()
    explicit = {} if muon_weight_decay is None else {"muon_weight_decay": muon_weight_decay}
    cfg = TrainConfig(optim="muon", learning_rate=3e-3, muon_learning_rate=0.02, weight_decay=0.1, max_steps=4,
                      **explicit)
    opt = build_optimizer(model, cfg)
    muon, adamw = opt.optimizers
    muon_names = {n for n, p in model.named_parameters() if any(p is q for g in muon.param_groups for q in g["params"])}
    assert muon_names and all(".mlp." in n for n in muon_names)
    assert not any("lora_" in n for n in muon_names)  # LoRA factors stay on AdamW
    mlp = next(p for n, p in model.named_parameters() if n in muon_names)
    lora = next(p for n, p in model.named_parameters() if "lora_A" in n)
    scheduler = get_scheduler("cosine", opt, num_warmup_steps=0, num_training_steps=4)
    for _ in range(3):
        adam_lr, muon_lr = adamw.param_groups[0]["lr"], muon.param_groups[0]["lr"]
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)  # a zero gradient leaves only the decay
        before_mlp, before_lora = mlp.detach().clone(), lora.detach().clone()
        opt.step()
        scheduler.step()
        muon_shrink = 1 - float((mlp.detach() / before_mlp).mean())
        adam_shrink = 1 - float((lora.detach() / before_lora).mean())
        assert adam_shrink == pytest.approx(adam_lr * 0.1, rel=1e-4)
        if muon_weight_decay is None:  # default: the same shrink as AdamW's at every step of the schedule
            assert muon_shrink == pytest.approx(adam_shrink, rel=1e-4)
        else:
            assert muon_shrink == pytest.approx(muon_lr * muon_weight_decay, rel=1e-4)
