"""M3 (multi-scale momentum Muon) and optim=muon_full: who gets which optimizer, and M3 descends."""

from __future__ import annotations

import torch
from torch import nn

from archlab.train.config import TrainConfig
from archlab.train.m3 import M3, newton_schulz
from archlab.train.optim import build_optimizer


def test_newton_schulz_is_nearly_orthogonal():
    g = torch.randn(16, 8)
    o = newton_schulz(g)
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.5 and s.max() < 1.3


def test_m3_lowers_a_least_squares_loss():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(6, 4))
    x, y = torch.randn(64, 4), torch.randn(64, 6)
    opt = M3([w], lr=0.02, slow_every=2)
    first = None
    for _ in range(30):
        loss = ((x @ w.T - y) ** 2).mean()
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.8 * first
    assert opt.state[w]["m2"].abs().sum() > 0


def _model():
    return nn.ModuleDict({"emb": nn.Embedding(10, 4), "lin": nn.Linear(4, 4), "norm": nn.LayerNorm(4)})


def test_optimizer_choices():
    groups = {}
    for optim in ("muon", "muon_full", "m3"):
        opt = build_optimizer(_model(), TrainConfig(optim=optim))
        groups[optim] = [(type(o).__name__, sum(p.numel() for g in o.param_groups for p in g["params"]))
                         for o in opt.optimizers]
    assert groups["muon"][0] == ("Muon", 16)            # the hidden matrix only
    assert groups["muon_full"][0] == ("Muon", 16 + 40)  # and the embedding
    assert groups["m3"][0] == ("M3", 16)
