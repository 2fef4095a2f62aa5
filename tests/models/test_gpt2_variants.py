"""Seed 001's GPT-2 variants: every variant passes the generic checks; each mechanism does what §2 says."""

from __future__ import annotations

import math

import pytest
import torch
from tests.models import generic
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from archlab.models.gpt2_variants import (
    GPT2VariantsConfig,
    GPT2VariantsForCausalLM,
    duo_attention_pattern,
    duo_interleave,
    frequencies_of,
    geometric_frequencies,
)

VOCAB = 64
TINY = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=None, eos_token_id=None)
VARIANTS = {
    "baseline": {},
    "drift": dict(drift="sigmoid"),
    "drift_no_baseline": dict(drift="sigmoid", drift_baseline=False),
    "drift_scalar": dict(drift="scalar"),
    "diffusion": dict(diffusion=True),
    "drift_diffusion": dict(drift="sigmoid", diffusion=True),
    "parallel_mean": dict(parallel="mean"),
    "parallel_add": dict(parallel="add"),
    "parallel_concat": dict(parallel="concat"),
    "parallel_concat_per_pair": dict(parallel="concat", parallel_per_pair=True, n_layer=4),
    "rotating_lr": dict(rotation="learned"),
    "rotating_lr_norm": dict(rotation="learned", rotation_norm=True),
    "rotating_gp": dict(rotation="geometric"),
    "rotating_gp_norm": dict(rotation="geometric", rotation_norm=True),
    "duo_predict": dict(duo_predict=True),
}


def build(name: str, **over) -> GPT2VariantsForCausalLM:
    torch.manual_seed(0)
    return GPT2VariantsForCausalLM(GPT2VariantsConfig(**{**TINY, **VARIANTS[name], **over})).eval()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_passes_the_generic_checks(name, tmp_path):
    model = build(name)
    generic.check_causal(model, VOCAB)
    generic.check_cached_decoding(model, VOCAB)
    generic.check_generate(model, VOCAB)
    generic.check_save_load(model, VOCAB, tmp_path)
    generic.check_gradients_reach_every_parameter(build(name), VOCAB)


def test_baseline_is_gpt2_itself():
    """All switches off: the same parameter names as transformers' GPT-2 and the same logits."""
    ours = build("baseline")
    theirs = GPT2LMHeadModel(GPT2Config(**TINY)).eval()
    assert theirs.load_state_dict(ours.state_dict(), strict=True)
    x = generic.tokens(VOCAB)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=x).logits, theirs(input_ids=x).logits)


def _copy_shared(src, dst) -> None:
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    assert not unexpected and all("drift" in k or "diffusion" in k for k in missing), missing


def test_drift_with_sigmoid_gain_at_zero_equals_baseline():
    base, drift = build("baseline"), build("drift")
    _copy_shared(base, drift)
    x = generic.tokens(VOCAB)
    with torch.no_grad():
        assert not torch.allclose(drift(input_ids=x).logits, base(input_ids=x).logits, atol=1e-4)
        for name, p in drift.named_parameters():
            if name.endswith("drift_gain"):
                p.fill_(-1e4)  # σ(D) = 0
        torch.testing.assert_close(drift(input_ids=x).logits, base(input_ids=x).logits)


def test_drift_formula_on_one_head_output():
    model = build("drift")
    attn = model.transformer.h[0].attn
    o = torch.randn(2, 5, 4, 8)
    expected = o + torch.sigmoid(attn.drift_gain) * (o - attn.drift_baseline)
    torch.testing.assert_close(attn._mix_heads(o), expected)
    scalar = build("drift_scalar").transformer.h[0].attn
    assert scalar.drift_gain.shape == (4, 1) and scalar.drift_gain.abs().max() < 0.2  # N(0,1)·0.02 per head
    torch.testing.assert_close(scalar._mix_heads(o), o + scalar.drift_gain * (o - scalar.drift_baseline))


def test_diffusion_is_noise_in_training_and_deterministic_in_eval():
    model = build("diffusion")
    x = generic.tokens(VOCAB)
    with torch.no_grad():
        a, b = model(input_ids=x).logits, model(input_ids=x).logits
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        base = build("baseline")
        _copy_shared(base, model)
        torch.testing.assert_close(model(input_ids=x).logits, base(input_ids=x).logits)  # eval: ε = 0
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        c, d = model(input_ids=x).logits, model(input_ids=x).logits
    assert not torch.allclose(c, d)


def test_parallel_mean_of_two_identical_blocks_equals_one_block():
    one = build("baseline", n_layer=1)
    pair = build("parallel_mean")
    block = one.transformer.h[0].state_dict()
    pair.transformer.h[0].left.load_state_dict(block)
    pair.transformer.h[0].right.load_state_dict(block)
    for name in ("wte", "wpe", "ln_f"):
        getattr(pair.transformer, name).load_state_dict(getattr(one.transformer, name).state_dict())
    x = generic.tokens(VOCAB)
    with torch.no_grad():
        torch.testing.assert_close(pair(input_ids=x).logits, one(input_ids=x).logits)


def test_parallel_merges_and_shared_bottleneck():
    h = torch.randn(2, 5, 32)
    for merge, combine in (("mean", lambda a, b: (a + b) / 2), ("add", lambda a, b: a + b)):
        pair = build(f"parallel_{merge}").transformer.h[0]
        torch.testing.assert_close(pair(h), combine(pair.left(h), pair.right(h)))
    shared = build("parallel_concat", n_layer=4)
    names = [n for n, _ in shared.named_parameters() if "proj" in n and "c_proj" not in n]
    assert names == ["transformer.parallel_proj.weight", "transformer.parallel_proj.bias"]  # one, model-wide
    pair = shared.transformer.h[1]
    torch.testing.assert_close(pair(h), shared.transformer.parallel_proj(torch.cat((pair.left(h), pair.right(h)), -1)))
    per_pair = build("parallel_concat_per_pair")
    assert sum(1 for n, _ in per_pair.named_parameters() if n.endswith(".proj.weight")) == 2
    assert len(shared.transformer.h) == 2  # 4 layers -> 2 sequential stages


def test_parallel_with_an_odd_layer_count_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^parallel=mean runs the layers in pairs: n_layer must be even, got 3$"):
        GPT2VariantsConfig(**{**TINY, "n_layer": 3, "parallel": "mean"})


def test_unknown_option_value_names_the_key():
    with pytest.raises(ValueError, match="rotation must be one of"):
        GPT2VariantsConfig(**{**TINY, "rotation": "spiral"})


def test_geometric_frequencies_equal_the_formula():
    theta = geometric_frequencies(4, 8)
    for h, s in enumerate([1.0, 10 ** (-1 / 3), 10 ** (-2 / 3), 0.1]):
        for i in range(4):
            assert math.isclose(float(theta[h, i]), s * 10000 ** (-2 * i / 8), rel_tol=1e-6)
    (model_theta,) = frequencies_of(build("rotating_gp", n_layer=1))
    torch.testing.assert_close(model_theta, theta)
    assert not any(p.requires_grad for n, p in build("rotating_gp").named_parameters() if "rotation" in n)


def test_rotation_norm_normalises_over_the_frequency_index():
    (theta,) = frequencies_of(build("rotating_lr_norm", n_layer=1))
    torch.testing.assert_close(theta.mean(-1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(theta.var(-1, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


def test_rotation_changes_attention_only_through_relative_offsets_and_keeps_wpe():
    lr = build("rotating_lr")
    assert lr.transformer.wpe.weight.shape == (64, 32)  # learned absolute positions kept
    attn = lr.transformer.h[0].attn
    q, k = torch.randn(1, 4, 1, 8), torch.randn(1, 4, 1, 8)
    scores = []
    for p in (3, 10):
        pos_q, pos_k = torch.tensor([[p + 2]]), torch.tensor([[p]])
        scores.append((attn._rotate(q, pos_q) * attn._rotate(k, pos_k)).sum(-1))
    torch.testing.assert_close(scores[0], scores[1])


# --------------------------------------------------------------------------------------------- Duo-Predict
def test_duo_mask_for_five_tokens_written_out():
    # rows/cols: a0 M0 a1 M1 a2 M2 a3 M3 a4 (M_m is the mask slot after a_m)
    expected = torch.tensor([
        # a0 M0 a1 M1 a2 M2 a3 M3 a4
        [1, 0, 0, 0, 0, 0, 0, 0, 0],  # a0: a0
        [0, 1, 1, 0, 0, 0, 0, 0, 0],  # M0: itself, a1
        [1, 0, 1, 0, 0, 0, 0, 0, 0],  # a1: a0 a1
        [1, 0, 0, 1, 1, 0, 0, 0, 0],  # M1: a0, itself, a2
        [1, 0, 1, 0, 1, 0, 0, 0, 0],  # a2: a0 a1 a2
        [1, 0, 1, 0, 0, 1, 1, 0, 0],  # M2: a0 a1, itself, a3
        [1, 0, 1, 0, 1, 0, 1, 0, 0],  # a3: a0..a3
        [1, 0, 1, 0, 1, 0, 0, 1, 1],  # M3: a0 a1 a2, itself, a4
        [1, 0, 1, 0, 1, 0, 1, 0, 1],  # a4: a0..a4
    ], dtype=torch.bool)
    assert torch.equal(duo_attention_pattern(5), expected)


def test_duo_interleaving_positions_and_explicit_targets():
    ids = torch.tensor([[10, 11, 12, 13, 14]])
    batch = duo_interleave(ids, ids, mask_id=63)
    assert batch.input_ids.tolist() == [[10, 63, 11, 63, 12, 63, 13, 63, 14]]
    assert batch.position_ids.tolist() == [[0, 0, 1, 1, 2, 2, 3, 3, 4]]
    # real a_m -> a_{m+1}; M after a_m -> a_m; the last real token has no target
    assert batch.labels.tolist() == [[11, 10, 12, 11, 13, 12, 14, 13, -100]]


def test_duo_padding_is_neither_attended_nor_scored():
    ids = torch.tensor([[10, 11, 12, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    batch = duo_interleave(ids, torch.where(mask.bool(), ids, -100), mask_id=63, attention_mask=mask)
    assert batch.labels.tolist() == [[11, 10, 12, 11, -100, -100, -100, -100, -100]]
    allowed = batch.allowed[0, 0].clone()
    assert allowed[3, 4]  # the slot after a1 sees a2, which is real
    allowed.fill_diagonal_(False)  # every slot sees itself (no empty softmax row)
    assert not allowed[:, 5:].any()  # a3, a4 and the slots next to them are padding: never attended
    model = build("duo_predict")
    out = model(input_ids=ids, attention_mask=mask, labels=torch.where(mask.bool(), ids, -100))
    assert torch.isfinite(out.loss)


def _duo_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    keep = labels != -100
    hits = (logits.argmax(-1) == labels) & keep
    real, slot = keep[:, 0::2], keep[:, 1::2]
    return float(hits[:, 0::2].sum() / real.sum()), float(hits[:, 1::2].sum() / slot.sum())


def test_duo_labels_aligned_a_copy_model_scores_zero_on_both_streams():
    """A model that outputs its own input token would score 100% on both streams under the public code's
    double shift (two copy tasks); with the intended alignment it scores ~0 on both."""
    ids = torch.randperm(60)[:40].view(2, 20)  # distinct tokens: copying is never accidentally right
    batch = duo_interleave(ids, ids, mask_id=63)
    copy_logits = torch.nn.functional.one_hot(batch.input_ids, 64).float()
    assert _duo_accuracy(copy_logits, batch.labels) == (0.0, 0.0)
    oracle = torch.nn.functional.one_hot(batch.labels.clamp(min=0), 64).float()
    assert _duo_accuracy(oracle, batch.labels) == (1.0, 1.0)
    # the double shift the public code does (labels shifted once more): the copy model would be perfect there
    shifted = batch.labels[:, :-1]
    assert _duo_accuracy(copy_logits[:, 1:], shifted)[0] < 1.0


def test_duo_loss_is_the_cross_entropy_of_both_streams_without_a_shift():
    model = build("duo_predict")
    ids = generic.tokens(VOCAB - 1, length=7)
    out = model(input_ids=ids, labels=ids)
    batch = duo_interleave(ids, ids, mask_id=VOCAB - 1)
    assert out.logits.shape[1] == 13
    expected = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), batch.labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


def _interleaved_logits(model, ids):
    with torch.no_grad():
        return model.duo_logits(duo_interleave(ids, ids, mask_id=VOCAB - 1))


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_duo_real_stream_is_causal_and_equals_the_plain_forward(implementation):
    model = build("duo_predict", attn_implementation=implementation)
    ids = generic.tokens(VOCAB - 1, length=9)
    inter = _interleaved_logits(model, ids)
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    torch.testing.assert_close(inter[:, 0::2], plain, atol=1e-5, rtol=1e-4)  # M slots never reach the real stream


def test_duo_mask_slot_sees_exactly_one_future_token():
    model = build("duo_predict")
    ids = generic.tokens(VOCAB - 1, length=9)
    base = _interleaved_logits(model, ids)
    m = 3  # the slot after a_3 is row 7
    nxt = ids.clone()
    nxt[:, m + 1] = (nxt[:, m + 1] + 1) % (VOCAB - 1)
    far = ids.clone()
    far[:, m + 2 :] = (far[:, m + 2 :] + 1) % (VOCAB - 1)
    assert not torch.allclose(_interleaved_logits(model, nxt)[:, 2 * m + 1], base[:, 2 * m + 1])  # sees a_{m+1}
    torch.testing.assert_close(_interleaved_logits(model, far)[:, 2 * m + 1], base[:, 2 * m + 1])  # not a_{m+2..}
    torch.testing.assert_close(_interleaved_logits(model, far)[:, : 2 * m + 2 : 2], base[:, : 2 * m + 2 : 2])


def test_duo_gap_token_is_hidden_in_one_layer_but_leaks_through_depth():
    """The mask keeps a_m from its slot at the first layer only: a_{m+1}'s state has attended to a_m."""
    ids = generic.tokens(VOCAB - 1, length=9)
    m = 3
    changed = ids.clone()
    changed[:, m] = (changed[:, m] + 1) % (VOCAB - 1)
    one = build("duo_predict", n_layer=1)
    torch.testing.assert_close(_interleaved_logits(one, changed)[:, 2 * m + 1], _interleaved_logits(one, ids)[:, 2 * m + 1])
    two = build("duo_predict", n_layer=2)
    assert not torch.allclose(_interleaved_logits(two, changed)[:, 2 * m + 1], _interleaved_logits(two, ids)[:, 2 * m + 1])


def test_auto_classes_load_a_saved_variant(tmp_path):
    model = build("parallel_concat")
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded, GPT2VariantsForCausalLM) and loaded.config.parallel == "concat"


def test_geometric_frequencies_survive_save_load_and_a_dtype_change(tmp_path):
    model = build("rotating_gp")
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    for theta in frequencies_of(loaded):
        torch.testing.assert_close(theta, geometric_frequencies(4, 8))
    assert "rotation_theta" not in " ".join(model.state_dict())  # a buffer rebuilt from the formula, not saved
    (theta,) = frequencies_of(build("rotating_gp", n_layer=1).to(torch.bfloat16))
    assert theta.dtype == torch.float32
    torch.testing.assert_close(theta, geometric_frequencies(4, 8))
