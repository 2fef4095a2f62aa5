"""Seed 004's byte latent model: byte-level causality of every part and patch configuration, BLT boundary rules on
hand-made entropies, threshold calibration, the entropy model's context reset, loading a trained entropy model,
the IntegralLNN layer's carried state, and the sizes' parameter counts."""

from __future__ import annotations

import pytest
import torch

from archlab.models import ARCHITECTURES
from archlab.models.byte_latent import SIZES, ByteLatentConfig, ByteLatentForCausalLM, parameter_count
from archlab.nn.byte_latent import (
    CausalNgramConv,
    HashNgramEmbedding,
    IntegralLNNBlock,
    calibrate_threshold,
    entropy_boundaries,
    mean_patch_length,
    patch_ids,
    static_boundaries,
)

VOCAB, T = 64, 23
TINY = ARCHITECTURES.get("byte_latent").tiny_config

CONFIGS = {
    "static1": dict(patching="static", patch_size=1),
    "static4": dict(patching="static", patch_size=4),
    "entropy_global": dict(entropy_rel_threshold=None),
    "entropy_global_and_relative": dict(),
    "entropy_no_newline_reset": dict(reset_at_newline=False),
    "entropy_max2_no_hash": dict(max_patch_size=2, target_patch_size=2.0, hash_ngram_sizes=[]),
    "entropy_hash3to8": dict(hash_ngram_sizes=[3, 4, 5, 6, 7, 8]),
}


def build(**overrides) -> ByteLatentForCausalLM:
    torch.manual_seed(0)
    return ByteLatentForCausalLM(ByteLatentConfig(vocab_size=VOCAB, **{**TINY, **overrides})).eval()


def ids(seed: int = 1, length: int = T, batch: int = 2) -> torch.Tensor:
    x = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    x[:, 7] = 10  # a newline inside: the entropy context restarts after it
    return x


def changed_before(fn, x: torch.Tensor, t: int) -> bool:
    """Does changing byte t change any output at a position < t?"""
    y = x.clone()
    y[:, t] = (y[:, t] + 17) % VOCAB
    with torch.no_grad():
        a, b = fn(x), fn(y)
    return not torch.allclose(a[:, :t], b[:, :t], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_changing_byte_t_changes_no_logit_before_t(name):
    model = build(**CONFIGS[name])
    x = ids()
    starts = model.patch_starts(x)
    if name.startswith("entropy"):  # the configuration really has patches of several lengths
        lengths = model.patch_lengths(x[:1])
        assert lengths.min() < lengths.max(), lengths
    assert int(starts[:, :T].sum()) >= 2
    for t in range(T):
        assert not changed_before(lambda z: model(input_ids=z).logits, x, t), f"byte {t} leaks backwards"
    # and the model does use the past: changing byte 0 changes later logits
    y = x.clone()
    y[:, 0] = (y[:, 0] + 1) % VOCAB
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=x).logits[:, 1:], model(input_ids=y).logits[:, 1:])


@pytest.mark.parametrize("name", ["entropy_global_and_relative", "entropy_no_newline_reset", "entropy_max2_no_hash"])
def test_patch_boundaries_are_causal(name):
    """Whether byte j starts a patch depends on bytes < j only (so byte t knows at t whether it ends a patch)."""
    model = build(**CONFIGS[name])
    x = ids()
    for t in range(T):
        # column i of [:, 1:] is "byte i ends a patch" / the entropy computed at byte i: bytes <= i only
        assert not changed_before(lambda z: model.patch_starts(z)[:, 1:].float(), x, t), t
        assert not changed_before(lambda z: model.entropies(z)[:, 1:], x, t), t


def test_each_byte_part_is_causal():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(VOCAB, 8)
    conv, hashed, lnn = CausalNgramConv(8, 4), HashNgramEmbedding(8, [3, 4, 5, 6, 7, 8], 97), \
        IntegralLNNBlock(8, 7, (0.5, 0.99), 4, 1e-5)
    parts = {"ngram_conv": lambda z: conv(emb(z)), "hash_ngrams": hashed, "integral_lnn": lambda z: lnn(emb(z))[0]}
    x = ids()
    for name, fn in parts.items():
        for t in range(T):
            assert not changed_before(fn, x, t), (name, t)


def test_integral_lnn_two_halves_with_carried_state_equal_one_pass():
    torch.manual_seed(0)
    block = IntegralLNNBlock(8, 7, (0.5, 0.99), 4, 1e-5).double()
    x = torch.randn(2, 19, 8, dtype=torch.float64)
    full, state = block(x)
    a, s1 = block(x[:, :5])
    b, s2 = block(x[:, 5:], s1)
    torch.testing.assert_close(torch.cat([a, b], 1), full)
    torch.testing.assert_close(s2["h"], state["h"])
    torch.testing.assert_close(s2["conv"], state["conv"])


def test_integral_lnn_decay_starts_spread_inside_the_unit_interval():
    block = IntegralLNNBlock(16, 7, (0.5, 0.99), 4, 1e-5)
    lam = torch.sigmoid(block.lnn.decay_logit.detach())
    assert float(lam.min()) == pytest.approx(0.5, abs=1e-4) and float(lam.max()) == pytest.approx(0.99, abs=1e-4)


# --------------------------------------------------------------------------------------- boundary rules
def test_global_threshold_rule_on_hand_made_entropies():
    H = torch.tensor([[0.9, 0.1, 0.2, 0.8, 0.1, 0.1, 0.7]])  # entropy of predicting byte j, j = 0..6 (T = 6)
    starts = entropy_boundaries(H, threshold=0.5, rel_threshold=None, max_patch_size=8)
    assert starts.int().tolist() == [[1, 0, 0, 1, 0, 0, 1]]  # bytes 0 and 3 start patches; byte 5 ends one
    pid, read, counts = patch_ids(starts)
    assert pid.tolist() == [[0, 0, 0, 1, 1, 1]]
    assert read.tolist() == [[-1, -1, 0, 0, 0, 1]]  # byte 2 closes patch 0, byte 5 closes patch 1
    assert counts.tolist() == [2]


def test_relative_rule_fires_on_a_rise_not_on_a_high_plateau():
    H = torch.tensor([[0.3, 0.1, 0.35, 0.4, 0.42, 0.2]])
    starts = entropy_boundaries(H, threshold=0.9, rel_threshold=0.2, max_patch_size=8)
    assert starts.int().tolist() == [[1, 0, 1, 0, 0, 0]]  # only the jump 0.1 -> 0.35 exceeds 0.2


def test_max_patch_size_splits_long_low_entropy_runs():
    H = torch.zeros(1, 20)
    starts = entropy_boundaries(H, threshold=0.5, max_patch_size=8)
    assert torch.nonzero(starts[0]).flatten().tolist() == [0, 8, 16]
    assert static_boundaries(1, 10, 4).int().tolist() == [[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0]]


@pytest.mark.parametrize("target", [4.0, 6.0])
def test_calibration_hits_the_target_mean_patch_length(target):
    H = torch.rand(4, 400, generator=torch.Generator().manual_seed(0))
    theta = calibrate_threshold(H, target, rel_threshold=None, max_patch_size=8)
    assert mean_patch_length(entropy_boundaries(H, theta, None, 8)) == pytest.approx(target, rel=0.05)


def test_training_forward_calibrates_once_and_evaluation_uses_the_stored_threshold():
    model = build(target_patch_size=4.0, entropy_rel_threshold=None)
    assert not bool(model.calibrated)
    model.train()
    x = ids(length=200, batch=4)
    model(input_ids=x)
    assert bool(model.calibrated)
    theta = float(model.threshold)
    model(input_ids=ids(seed=5, length=200, batch=4))
    assert float(model.threshold) == theta  # calibrated once, then fixed
    model.eval()
    assert mean_patch_length(model.patch_starts(x)) == pytest.approx(4.0, rel=0.1)


def test_entropy_context_restarts_after_a_newline():
    model = build()
    x = ids()
    y = x.clone()
    y[:, :7] = (y[:, :7] + 5) % VOCAB  # everything before the newline at 7
    y[:, :7][y[:, :7] == 10] = 11
    H_x, H_y = model.entropies(x), model.entropies(y)
    torch.testing.assert_close(H_x[:, 8:], H_y[:, 8:])  # bytes after the newline predicted from their line only
    assert not torch.allclose(build(reset_at_newline=False).entropies(x)[:, 8:],
                              build(reset_at_newline=False).entropies(y)[:, 8:])


# --------------------------------------------------------------------------------------- loading, sizes
def test_trained_entropy_model_is_loaded_frozen_and_saved_with_the_model(tmp_path):
    from transformers import AutoModelForCausalLM

    entropy = ByteLatentForCausalLM(ByteLatentConfig(vocab_size=VOCAB, **TINY)).entropy_model
    with torch.no_grad():
        entropy.lm_head.weight.mul_(3.0)
    entropy.save_pretrained(tmp_path / "entropy")
    model = build(entropy_model_path=str(tmp_path / "entropy"), entropy_config=None)
    torch.testing.assert_close(model.entropy_model.lm_head.weight, entropy.lm_head.weight)
    assert not any(p.requires_grad for p in model.entropy_model.parameters())
    assert model.config.entropy_model_path is None
    model.save_pretrained(tmp_path / "latent")
    (tmp_path / "entropy" / "config.json").unlink()  # the saved latent model does not need the folder
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "latent").eval()
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, model(input_ids=x).logits)


def test_a_missing_entropy_model_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="entropy_model_path"):
        ByteLatentConfig(entropy_model_path=str(tmp_path / "nothing"))


def test_sizes_have_the_seeds_parameter_counts():
    counts = {s: parameter_count(ByteLatentConfig(size=s, patching="static")) / 1e6 for s in SIZES}
    assert 4 < counts["tiny"] < 6 and 40 < counts["small"] < 60
    assert 170 < counts["base"] < 250 and 700 < counts["large"] < 950, counts


def test_hash_ngrams_depend_on_exactly_the_last_n_bytes():
    from archlab.nn.byte_latent import rolling_hashes

    x = torch.tensor([[5, 6, 7, 1, 5, 6, 7, 2, 6, 7]])
    h = rolling_hashes(x, 3, 1 << 20)
    assert h[0, 2] == h[0, 6]  # both end "5 6 7"
    assert h[0, 9] != h[0, 2]  # "2 6 7" differs in its oldest byte
    assert h[0, 0] != h[0, 1] and rolling_hashes(torch.tensor([[0]]), 3, 1 << 20)[0, 0] != 0  # pad != byte 0


# --------------------------------------------------------------------------------------- padding, compile
def test_right_padding_is_accepted_and_left_padding_refused():
    model = build(**CONFIGS["entropy_global_and_relative"])
    x = ids()
    right = torch.ones_like(x)
    right[1, -4:] = 0
    with torch.no_grad():
        padded = model(input_ids=x, attention_mask=right).logits
        torch.testing.assert_close(padded, model(input_ids=x).logits)  # causal: pads change no real byte's logits
    with pytest.raises(ValueError, match="right-padded batches only"):
        model(input_ids=x, attention_mask=right.flip(1))


def test_static_patching_trains_as_one_graph():
    """The patch count follows from the shape, so forward + loss + backward compile without a break (entropy
    patching, the tiny config's, is covered by tests/models/test_graph_breaks.py and the test below)."""
    from tests.models.test_graph_breaks import assert_one_graph

    torch.manual_seed(0)
    model = ByteLatentForCausalLM(ByteLatentConfig(vocab_size=VOCAB, **{**TINY, **CONFIGS["static4"]}))
    assert_one_graph(model, "byte_latent_static4")


def test_entropy_patching_compiles_once_calibrates_inside_the_graph_and_matches_eager():
    """Compiled as the trainer compiles (no fullgraph, its dynamo settings), the step is one graph (one frame:
    a break would add more) for batches with different patch counts (P is an unbacked size, not a guard), its
    first training call calibrates the threshold as eager does, and loss and gradients match eager."""
    import copy

    from torch._dynamo.testing import CompileCounterWithBackend

    from archlab.train.acceleration import compile_scope

    torch.manual_seed(0)
    eager = ByteLatentForCausalLM(ByteLatentConfig(vocab_size=VOCAB, **TINY)).train()
    model = copy.deepcopy(eager)
    counter = CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counter)
    batches = [ids(seed=seed, length=40) for seed in (1, 2, 3)]
    for x in batches:
        want = eager(input_ids=x, labels=x).loss
        want.backward()
        with compile_scope():
            got = compiled(input_ids=x, labels=x).loss
            got.backward()
        assert bool(model.calibrated) and float(model.threshold) == float(eager.threshold)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        for (name, p), q in zip(model.named_parameters(), eager.parameters(), strict=True):
            if p.grad is not None or q.grad is not None:
                torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
        model.zero_grad(set_to_none=True)
        eager.zero_grad(set_to_none=True)
    counts = {int(eager.patch_starts(x)[:, :40].sum(1).max()) for x in batches}
    assert len(counts) > 1, counts  # the batches really had different numbers of patches
    assert counter.frame_count == 1 and counter.op_count > 0
    torch._dynamo.reset()
