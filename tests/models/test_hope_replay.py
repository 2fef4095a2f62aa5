"""HOPE's two-pass training forward (``archlab.models.hope_replay``) equals the online forward with autograd."""

from __future__ import annotations

import pytest
import torch

import archlab.models.hope_replay as replay
from archlab.models import HopeConfig, HopeForCausalLM

VOCAB = 61


def model(replayed: bool, **overrides) -> HopeForCausalLM:
    torch.manual_seed(0)
    cfg = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, cms_hidden_multiplier=2,
               titan_hidden_multiplier=2, eos_token_id=None, teach_scale=2.0, train_replay=replayed)
    return HopeForCausalLM(HopeConfig(**{**cfg, **overrides}))


@pytest.fixture
def replays(monkeypatch):
    """How many forwards ran the replay (and did not fall back to the online forward)."""
    calls = []
    original = replay.replay_forward

    def counted(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(replay, "replay_forward", counted)
    return calls


def loss_and_grads(m: HopeForCausalLM, ids: torch.Tensor, **kwargs):
    out = m(input_ids=ids, labels=ids, **kwargs)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    return out.loss.detach(), out.logits.detach(), grads, m.inner_telemetry()


def assert_same(online, replayed):
    loss0, logits0, grads0, tel0 = online
    loss1, logits1, grads1, tel1 = replayed
    torch.testing.assert_close(loss1, loss0, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logits1, logits0, atol=1e-5, rtol=1e-5)
    assert grads1.keys() == grads0.keys()
    for name, g in grads0.items():
        torch.testing.assert_close(grads1[name], g, atol=1e-6 * max(1.0, float(g.abs().max())), rtol=1e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")
    assert tel1 == tel0


CASES = {
    "hybrid, learned self-modifier": dict(block_type="hope_hybrid", cms_periods=[4, 8, 16], titan_period=4),
    "hybrid, frozen self-modifier": dict(block_type="hope_hybrid", cms_periods=[4, 12], selfmod="frozen"),
    "hybrid, teach-only": dict(block_type="hope_hybrid", cms_periods=[2, 6], selfmod="none"),
    "attention, momentum + preconditioner": dict(block_type="hope_attention", cms_periods=[3, 9], inner_momentum=0.9,
                                                 inner_precond=True),
    "titan baseline": dict(block_type="titan", titan_period=5),
    "gated": dict(block_type="hope_hybrid", cms_periods=[4, 8], surprise_threshold=0.9),
}


@pytest.mark.parametrize("length", [37, 48])
@pytest.mark.parametrize("case", list(CASES))
def test_replayed_training_forward_equals_the_online_one(case, length, replays):
    ids = torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(1))
    online = loss_and_grads(model(False, **CASES[case]), ids)
    assert replays == []
    replayed = loss_and_grads(model(True, **CASES[case]), ids)
    assert replays == [True]
    assert_same(online, replayed)


def test_the_learned_self_modifier_still_learns_through_its_writes_when_replayed(replays):
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(2))
    _, _, grads, _ = loss_and_grads(model(True, **CASES["hybrid, learned self-modifier"]), ids)
    assert replays == [True]
    selfmod = [g for n, g in grads.items() if ".selfmod." in n]
    assert selfmod and all(float(g.abs().sum()) > 0 for g in selfmod)


def test_replay_starts_from_the_memorized_state(replays):
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(3))
    context = torch.randint(0, VOCAB, (1, 16), generator=torch.Generator().manual_seed(4))
    results = []
    for replayed in (False, True):
        m = model(replayed, **CASES["hybrid, learned self-modifier"])
        m.memorize(context)
        results.append(loss_and_grads(m, ids))
    assert replays == [True]
    assert_same(*results)


@pytest.mark.parametrize("why", ["padding mask", "cache", "per-layer teach signal", "selfmod titans",
                                 "learned self-modifier with momentum", "no grad", "switched off"])
def test_calls_the_replay_does_not_cover_run_online(why, replays):
    overrides = dict(CASES["hybrid, learned self-modifier"])
    kwargs = {}
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(5))
    if why == "padding mask":
        kwargs["attention_mask"] = torch.ones_like(ids).index_fill_(1, torch.tensor([0]), 0)
    elif why == "cache":
        kwargs["use_cache"] = True
    elif why == "per-layer teach signal":
        overrides["per_layer_teach_signal"] = True
    elif why == "selfmod titans":
        overrides = dict(block_type="hope_selfmod", cms_periods=[8], selfmod_chunk_size=4, selfmod_chunk_size_memory=8)
    elif why == "learned self-modifier with momentum":
        overrides["inner_momentum"] = 0.5
    m = model(why != "switched off", **overrides)
    with torch.set_grad_enabled(why != "no grad"):
        m(input_ids=ids, labels=ids, **kwargs)
    assert replays == []


def test_slot_buffers_are_reused_across_steps_but_never_while_a_graph_holds_them(replays):
    """Two forwards before their backwards (the first graph still holds its buffers) give the online gradients."""
    ids = [torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(s)) for s in (6, 7)]
    results = {}
    for replayed in (False, True):
        m = model(replayed, **CASES["hybrid, learned self-modifier"])
        losses = [m(input_ids=x, labels=x).loss for x in ids]
        (losses[0] + 2 * losses[1]).backward()
        results[replayed] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        if replayed:  # a later step, its graphs gone, takes the kept buffers again
            kept = {key: buf for key, (buf, _) in m._slot_pool.buffers.items()}
            m.zero_grad()
            m(input_ids=ids[0], labels=ids[0]).loss.backward()
            assert kept and all(m._slot_pool.buffers[key][0] is buf for key, buf in kept.items())
            assert len(kept) == len(m._slot_pool.buffers)
    assert replays == [True, True, True]
    for name, g in results[False].items():
        torch.testing.assert_close(results[True][name], g, atol=1e-6, rtol=1e-4)


def test_a_recording_that_cannot_be_replayed_falls_back_to_the_online_forward_counting_once(monkeypatch):
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(8))
    online = loss_and_grads(model(False, **CASES["gated"]), ids)
    monkeypatch.setattr(replay, "_replay_plan", lambda *args: None)
    assert_same(online, loss_and_grads(model(True, **CASES["gated"]), ids))


def test_hooks_on_the_model_fire_once_per_training_call(replays):
    m = model(True, **CASES["hybrid, learned self-modifier"])
    calls = []
    m.register_forward_hook(lambda module, args, out: calls.append(out.loss is not None))
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(9))
    m(input_ids=ids, labels=ids).loss.backward()
    assert replays == [True] and calls == [True]


def test_replay_under_bf16_autocast_matches_the_online_forward(replays):
    """The trainer's default on CPUs with native bf16: the recording pass's pooled logits buffer takes the autocast
    dtype and the blocked reads stay fp32, so replay and online agree to bf16 rounding."""
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(10))
    results = []
    for replayed in (False, True):
        m = model(replayed, **CASES["hybrid, learned self-modifier"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(input_ids=ids, labels=ids)
            out.loss.backward()
        grads = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
        results.append((out.loss.detach().float(), out.logits.dtype, grads))
    assert replays == [True]
    (loss0, dtype0, grads0), (loss1, dtype1, grads1) = results
    assert dtype1 == dtype0 and grads1.keys() == grads0.keys()
    torch.testing.assert_close(loss1, loss0, atol=2e-2, rtol=0)
    for name, g in grads0.items():
        assert torch.isfinite(grads1[name]).all(), name
        torch.testing.assert_close(grads1[name].float(), g.float(), atol=0.05 * max(1e-3, float(g.abs().max())),
                                   rtol=0.1, msg=lambda m, name=name: f"{name}: {m}")


def test_the_loss_record_gives_the_cross_entropy_its_gradients_and_the_teach_signal():
    """Chunk by chunk, as the recording pass computes teach signals: per-token loss, dCE/dlogits and dCE/dh equal
    autograd through F.cross_entropy (unscored targets included, and logits so spread that softmax underflows)."""
    gen = torch.Generator().manual_seed(11)
    b, t, v, d = 2, 10, 23, 5
    hidden, emb = torch.randn(b, t, d, generator=gen), torch.randn(v, d, generator=gen)
    targets = torch.randint(0, v, (b, t), generator=gen)
    targets[0, 3] = targets[0, 5] = targets[1, 9] = -100
    hidden[1, 2] *= 300.0  # every p but one underflows to 0 in fp32: the target's log comes from the logits
    hidden[0, 5] = -300.0 * emb[0]  # p of token 0 (where a -100 target points) underflows: no -log 0 in the loss
    logits = hidden @ emb.t()
    record = replay.LossRecord(replay.SlotPool(), b, t, v, d, torch.device("cpu"))
    for start, end in [(0, 4), (4, 8), (8, 10)]:
        piece = targets[:, start:end]
        delta = record.teach_signal(logits[:, start:end], piece, piece != -100, emb)
        torch.testing.assert_close(delta, record.delta[:, start:end])
    assert record.covered == t
    scored = logits.clone().requires_grad_(True)
    per_token = torch.nn.functional.cross_entropy(scored.flatten(0, 1), targets.flatten(), ignore_index=-100,
                                                  reduction="none").view(b, t)
    per_token.sum().backward()
    assert torch.isfinite(record.loss).all() and float(record.loss[1, 2]) > 100
    torch.testing.assert_close(record.loss, per_token.detach(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(record.grad_logits.transpose(0, 1), scored.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(record.delta, scored.grad @ emb, atol=1e-5, rtol=1e-5)


def test_the_recorded_loss_equals_the_logits_loss_with_unscored_labels(monkeypatch):
    """The replay's loss and the online training forward's both come from the record; they equal the log-softmax
    loss of the online forward's logits (record switched off), with every gradient and the telemetry."""
    used = []
    original = replay._RecordedLoss.forward
    monkeypatch.setattr(replay._RecordedLoss, "forward", staticmethod(lambda ctx, *a: used.append(1) or original(ctx, *a)))
    ids = torch.randint(0, VOCAB, (2, 29), generator=torch.Generator().manual_seed(12))
    labels = ids.clone()
    labels[0, 4:9] = labels[1, -1] = -100
    results = []
    for replayed, recorded in ((False, False), (False, True), (True, True)):
        with monkeypatch.context() as patch:
            if not recorded:
                patch.setattr(replay, "online_loss_record", lambda *a: None)
            m = model(replayed, **CASES["hybrid, learned self-modifier"])
            out = m(input_ids=ids, labels=labels)
            out.loss.backward()
        results.append((out.loss.detach(), out.logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters()
                                                                  if p.grad is not None}, m.inner_telemetry()))
    assert used == [1, 1]
    assert_same(results[0], results[1])
    assert_same(results[0], results[2])


@pytest.mark.parametrize("overrides", [
    dict(block_type="hope_hybrid", cms_periods=[4, 8], titan_period=4, per_layer_teach_signal=True),
    dict(block_type="hope_selfmod", cms_periods=[4, 8], selfmod_chunk_size=4, selfmod_chunk_size_memory=8,
         selfmod_lr=0.5, selfmod_momentum=0.5)], ids=["per-layer teach signal", "self-modifying titans"])
def test_the_online_forwards_recorded_loss_equals_the_logits_loss(monkeypatch, overrides):
    """The forwards that never replay (the per-layer teach signal, self-modifying Titans) train on the recorded loss:
    the same loss, logits, gradients and telemetry as the log-softmax loss of their logits."""
    used = []
    original = replay._RecordedLoss.forward
    monkeypatch.setattr(replay._RecordedLoss, "forward", staticmethod(lambda ctx, *a: used.append(1) or original(ctx, *a)))
    ids = torch.randint(0, VOCAB, (2, 21), generator=torch.Generator().manual_seed(13))
    labels = ids.clone()
    labels[1, 3:7] = -100
    results = []
    for recorded in (False, True):
        with monkeypatch.context() as patch:
            if not recorded:
                patch.setattr(replay, "online_loss_record", lambda *a: None)
            m = model(True, **overrides)
            out = m(input_ids=ids, labels=labels)
            out.loss.backward()
        results.append((out.loss.detach(), out.logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters()
                                                                  if p.grad is not None}, m.inner_telemetry()))
    assert used == [1]
    assert_same(*results)
