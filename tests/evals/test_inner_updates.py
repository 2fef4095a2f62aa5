"""inner_updates: training telemetry from metrics.jsonl plus eval-time counters, with a verdict in words."""

from __future__ import annotations

import torch

from archlab.evals.inner_updates import InnerUpdatesParams, inner_updates, inner_updates_view, verdict
from archlab.evals.lib.views import EvalRun
from archlab.models import ARCHITECTURES, HopeConfig, HopeForCausalLM


def _hope(vocab: int, **over) -> HopeForCausalLM:
    torch.manual_seed(0)
    return HopeForCausalLM(HopeConfig(vocab_size=vocab, **{**ARCHITECTURES.get("hope").tiny_config, **over})).eval()


def test_a_blocking_gate_is_reported(byte_tok, make_ctx):
    ctx = make_ctx(_hope(len(byte_tok), surprise_threshold=1e9), byte_tok)
    ctx.run_dir.mkdir(parents=True)
    ctx.run.metrics.append({"step": 1, "inner/gate_tokens": 100, "inner/gate_hit": 100,
                            "inner/updates_applied": 0, "inner/updates_blocked": 12})
    result = inner_updates(ctx, InnerUpdatesParams(tokens=32))
    assert result.metrics["train_gate_hit_rate"] == 1.0 and result.metrics["eval_gate_hit_rate"] == 1.0
    assert result.metrics["eval_updates_applied"] == 0 and result.metrics["eval_updates_blocked"] > 0
    assert "blocked every token" in result.details["train_verdict"]


def test_an_open_gate_writes(byte_tok, make_ctx):
    result = inner_updates(make_ctx(_hope(len(byte_tok)), byte_tok), InnerUpdatesParams(tokens=32))
    assert result.metrics["eval_updates_applied_rate"] == 1.0
    assert verdict(0, 5, 0.0).endswith("the fast memories never changed")
    assert "teach_scale was 0" in verdict(0, 5, 0.0)


def test_the_report_view_shows_the_verdict(tmp_path):
    payload = {"metrics": {"train_gate_hit_rate": 1.0, "train_updates_applied": 0, "train_updates_blocked": 40},
               "details": {"train_verdict": "every inner update was blocked"}}
    view = inner_updates_view([EvalRun("gate-1", "gate", payload)], tmp_path)
    assert "Inner updates" in view.title and "every inner update was blocked" in view.markdown
    assert "| 40 " in view.markdown
