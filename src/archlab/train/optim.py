"""Optimizers: AdamW (fused where the device allows) and the Muon hybrid.

Muon (``torch.optim.Muon``) orthogonalises the update of 2-D hidden weight matrices; embeddings, the
output head, norms, biases and LoRA factors stay on AdamW, as in modded-nanogpt and seed 003's pilot.

Weight decay: both optimizers shrink a decayed weight by ``1 - lr * weight_decay`` per step, each with its
own lr. With Muon's lr (0.02) far above AdamW's, one ``weight_decay`` would decay the Muon matrices many
times faster, so Muon gets ``train.muon_weight_decay``, by default ``weight_decay * learning_rate /
muon_learning_rate``: the same shrink per step for both groups, at every step, since the LR schedule
scales both lrs by the same factor.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from archlab.train.config import TrainConfig


def _decay_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float, lr: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in named:
        (decay if p.ndim >= 2 and "norm" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr},
              {"params": no_decay, "weight_decay": 0.0, "lr": lr}]
    return [g for g in groups if g["params"]]


def _adamw(groups: list[dict], cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    fused = cfg.optim == "adamw_torch_fused" or (cfg.optim in ("adamw", "muon") and device.type == "cuda")
    return torch.optim.AdamW(
        groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon, fused=fused
    )


def is_muon_param(name: str, p: nn.Parameter, embedding_ids: set[int]) -> bool:
    # LoRA factors are low-rank by design: orthogonalising their update would make it full-rank in the factor
    return (p.ndim == 2 and id(p) not in embedding_ids and "lm_head" not in name and "norm" not in name
            and "lora_" not in name)


class HybridOptimizer(torch.optim.Optimizer):
    """Several optimizers stepped together; ``param_groups`` is their concatenation, so LR schedulers work."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers
        self.defaults = {}
        self.state = {}

    @property
    def param_groups(self) -> list[dict]:
        # read through every time: load_state_dict replaces the group dicts of the inner optimizers
        return [g for opt in self.optimizers for g in opt.param_groups]

    def step(self, closure=None):
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        for opt, sd in zip(self.optimizers, state_dict["optimizers"], strict=True):
            opt.load_state_dict(sd)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    device = named[0][1].device if named else torch.device("cpu")
    if cfg.optim not in ("muon", "muon_full", "m3"):
        return _adamw(_decay_groups(named, cfg.weight_decay, cfg.learning_rate), cfg, device)
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    if cfg.optim == "muon_full":  # seed 003's "Force Muon everywhere": embeddings and head too
        embeddings = set()
    muon_params = [p for n, p in named if is_muon_param(n, p, embeddings) or
                   (cfg.optim == "muon_full" and p.ndim == 2)]
    muon_ids = {id(p) for p in muon_params}
    rest = [(n, p) for n, p in named if id(p) not in muon_ids]
    optimizers: list[torch.optim.Optimizer] = []
    if muon_params and cfg.optim == "m3":
        from archlab.train.m3 import M3
        optimizers.append(M3(muon_params, lr=cfg.muon_learning_rate, momentum=cfg.muon_momentum,
                             weight_decay=cfg.resolved_muon_weight_decay, slow_every=cfg.m3_slow_every,
                             slow_weight=cfg.m3_slow_weight, slow_beta=cfg.m3_slow_beta))
    elif muon_params:
        optimizers.append(
            torch.optim.Muon(
                muon_params, lr=cfg.muon_learning_rate, weight_decay=cfg.resolved_muon_weight_decay,
                momentum=cfg.muon_momentum,
            )
        )
    if rest:
        optimizers.append(_adamw(_decay_groups(rest, cfg.weight_decay, cfg.learning_rate), cfg, device))
    return HybridOptimizer(optimizers)
