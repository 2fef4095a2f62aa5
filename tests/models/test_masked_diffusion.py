"""The masked-diffusion objective: invariants that hold for any model, and a bidirectional run that learns."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tests.graft.conftest import VOCAB, tiny_model
from tests.graft.test_plan_and_run import PLAN

from archlab.data import DataConfig, build_data
from archlab.errors import ArchlabError
from archlab.graft import apply_graft
from archlab.models.masked_diffusion import EPS, MaskedBatch, draw_masks, row_seed, score_masked_batch
from archlab.models.spec import ModelConfig, build_model
from archlab.plan import expand, load_plan
from archlab.plan.schema import RunConfig
from archlab.train import TrainConfig, Trainer, validation_loss

MASK = VOCAB - 1


def _bidirectional_model():
    model = tiny_model("llama")
    return apply_graft(model, {"bidirectional": True, "lora": False, "chunk_size": 4}).eval()


def _batch(seed=1, length=17):
    ids = torch.randint(0, VOCAB - 1, (3, length), generator=torch.Generator().manual_seed(seed))
    labels = ids.clone()
    labels[2, :5] = -100  # a masked prompt: never noised, never scored
    return {"input_ids": ids, "labels": labels}


SEEDS = [row_seed(0, i) for i in range(3)]


def test_hidden_tokens_change_nothing_the_model_sees():
    model, batch = _bidirectional_model(), _batch()
    noised = MaskedBatch.make(batch, MASK, SEEDS)
    assert noised.masked.any() and (~noised.masked & noised.scorable).any()
    other = {k: v.clone() for k, v in batch.items()}
    other["input_ids"][:, 1:][noised.masked] = (other["input_ids"][:, 1:][noised.masked] + 7) % (VOCAB - 1)
    other_noised = MaskedBatch.make(other, MASK, SEEDS)
    assert torch.equal(other_noised.masked, noised.masked) and torch.equal(other_noised.inputs, noised.inputs)
    with torch.no_grad():
        a = model(input_ids=noised.inputs).logits
        b = model(input_ids=other_noised.inputs).logits
    assert torch.equal(a, b)  # a bidirectional model predicts the hidden tokens without seeing them


def test_with_t_fixed_the_weight_is_exactly_one_over_p():
    model, batch = _bidirectional_model(), _batch()
    noised = MaskedBatch.make(batch, MASK, SEEDS)
    with torch.no_grad():
        logits = model(input_ids=noised.inputs).logits
    weighted = noised.weighted_nll(logits)
    for row in range(3):
        where = noised.masked[row]
        ce = F.cross_entropy(logits[row, :-1][where], batch["input_ids"][row, 1:][where], reduction="sum")
        torch.testing.assert_close(weighted[row].sum(), ce / noised.p[row])
    assert ((EPS <= noised.p) & (noised.p <= 1)).all()
    assert not noised.masked[2, :4].any()  # prompt tokens (label -100) are never masked
    totals = score_masked_batch(model, batch, MASK, SEEDS)
    assert totals.loss == pytest.approx(float(weighted.sum()) / int(noised.scorable.sum()), rel=1e-5)


def test_unmasked_positions_contribute_nothing():
    batch = _batch()
    noised = MaskedBatch.make(batch, MASK, SEEDS)
    logits = torch.randn(3, 17, VOCAB, requires_grad=True)
    noised.weighted_nll(logits).sum().backward()
    unmasked = ~noised.masked
    assert logits.grad[:, :-1][unmasked].abs().max() == 0 and logits.grad[:, :-1][noised.masked].abs().max() > 0
    poked = logits.detach().clone()
    poked[:, :-1][unmasked] += torch.randn_like(poked[:, :-1][unmasked]) * 10
    torch.testing.assert_close(noised.weighted_nll(poked).sum(), noised.weighted_nll(logits.detach()).sum())


def test_masks_depend_only_on_the_row_seed():
    scorable = torch.ones(4, 64, dtype=torch.bool)
    p, masks = draw_masks(scorable, [row_seed(5, i) for i in range(4)])
    p2, masks2 = draw_masks(scorable[2:3], [row_seed(5, 2)])
    assert torch.equal(masks[2:3], masks2) and p[2] == p2[0]
    rates = [draw_masks(scorable[:1], [row_seed(9, i)])[1].float().mean() for i in range(200)]
    assert 0.4 < float(torch.stack(rates).mean()) < 0.6  # t ~ U(0, 1): half the tokens masked on average


@pytest.mark.slow  # trains a model for many steps: CI runs it with the slow suite
def test_a_bidirectional_run_trains_and_its_masked_loss_falls(tmp_path, corpus_dir):
    data = build_data(DataConfig(source=str(corpus_dir), tokenizer="bytes", block_size=32, add_mask_token=True))
    mask_id = data.tokenizer.mask_token_id
    assert mask_id == len(data.tokenizer) - 1 == 258  # bytes + EOS + PAD, then the added mask token
    torch.manual_seed(0)
    model = build_model(ModelConfig(hf_config={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                                               "num_hidden_layers": 2, "num_attention_heads": 4,
                                               "num_key_value_heads": 2}), vocab_size=len(data.tokenizer))
    model = apply_graft(model, {"bidirectional": True, "lora": False, "chunk_size": 8})
    for p in model.parameters():
        p.requires_grad_(True)
    before = validation_loss(model, data, 8, mask_token_id=mask_id).loss
    cfg = TrainConfig(objective="masked_diffusion", max_steps=40, per_device_train_batch_size=8, learning_rate=3e-3,
                      logging_steps=10)
    Trainer(model, data, cfg, tmp_path).fit()
    after = validation_loss(model, data, 8, mask_token_id=mask_id).loss
    assert after < before - 1.0, (before, after)
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["eval_loss"] == pytest.approx(after, rel=1e-6)  # in-run validation uses the objective


def test_bidirectional_runs_use_the_objective_and_refuse_next_token_evals():
    config = RunConfig.parse({"graft": {"bidirectional": True}})
    assert config.train.objective == "masked_diffusion" and config.data.add_mask_token
    assert [e.name for e in config.eval] == ["masked_loss"]
    assert RunConfig.parse({}).train.objective == "causal_lm"
    for bad, match in [
        ({"graft": {"bidirectional": True}, "eval": ["loss"]}, "eval 'loss' cannot score a masked_diffusion run"),
        ({"graft": {"bidirectional": True}, "eval": [{"name": "niah"}]}, "eval 'niah' cannot score"),
        ({"graft": {"bidirectional": True}, "train": {"objective": "causal_lm"}}, "use train.objective=masked"),
        ({"eval": ["masked_loss"]}, "eval 'masked_loss' cannot score a causal_lm run"),
    ]:
        with pytest.raises(ArchlabError, match=match):
            RunConfig.parse(bad)


def test_the_titanesque_dream_runs_train_and_score_with_the_objective():
    for profile in ("smoke", "full"):
        specs = expand(load_plan(PLAN), profile=profile)
        assert len(specs) == 33
        dream = [s for s in specs if s.config.graft.bidirectional]
        assert len(dream) == 2
        for spec in dream:
            assert spec.config.train.objective == "masked_diffusion"
            assert [e.name for e in spec.config.eval] == ["masked_loss"]
        assert all(s.config.train.objective == "causal_lm" for s in specs if s not in dream)
