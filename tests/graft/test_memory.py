"""MemoryBranch alone: virtual tokens as the TPTT paper defines them, padding, bidirectional, decoding state."""

from __future__ import annotations

import math

import pytest
import torch

from archlab.errors import ArchlabError
from archlab.nn.memory import MemoryBranch, causal_avg3, finite_difference, rotate_pairs, virtual_tokens

B, T, H, G, D = 2, 11, 4, 2, 8


def _raw(t: int = T, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(B, t, H * D, generator=gen), torch.randn(B, t, G * D, generator=gen),
            torch.randn(B, t, G * D, generator=gen))


def test_finite_difference_is_the_normalised_binomial_difference():
    x = torch.randn(1, 5, 1, 3)
    d1 = finite_difference(x, 1)
    assert torch.allclose(d1[:, 1:], (x[:, 1:] - x[:, :-1]) / 2)
    assert torch.allclose(d1[:, 0], x[:, 0] / 2)  # zero before the first token
    d2 = finite_difference(x, 2)
    assert torch.allclose(d2[:, 2:], (x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]) / 4)


def test_rotation_turns_channel_pairs_and_keeps_the_norm():
    x = torch.randn(1, 3, 2, 6)
    r = rotate_pairs(x, math.pi / 2)
    assert torch.allclose(r[..., :3], -x[..., 3:]) and torch.allclose(r[..., 3:], x[..., :3])
    assert torch.allclose(r.norm(dim=-1), x.norm(dim=-1))
    assert torch.allclose(rotate_pairs(x, math.pi), -x, atol=1e-6)


@pytest.mark.parametrize("trick", ["derivative", "rotation", "combined"])
def test_virtual_tokens_follow_the_paper(trick):
    x = torch.randn(B, 5, H, D)
    v = virtual_tokens(x, 2, trick)
    assert v.shape == (B, 5, H, 2, D)
    assert torch.equal(v[:, :, :, 0], x)  # virtual token 0 is the token itself
    diff = finite_difference(x, 1)
    expected = {"derivative": diff, "rotation": -x, "combined": -diff}[trick]
    assert torch.allclose(v[:, :, :, 1], expected, atol=1e-6)


def test_beta_is_the_sigmoid_of_a_causal_3_tap_average():
    k = torch.randn(1, 4, 1, 2)
    avg = causal_avg3(k)
    assert torch.allclose(avg[:, 0], k[:, 0])  # first value replicated to the left
    assert torch.allclose(avg[:, 3], (k[:, 1] + k[:, 2] + k[:, 3]) / 3)


@pytest.mark.parametrize("operator", ["delta_rule", "delta_product", "delta_product_derived_rotation"])
def test_output_is_causal_and_rms_normalised(operator):
    memory = MemoryBranch(H, G, D, operator=operator, chunk_size=4)
    q, k, v = _raw()
    o, _ = memory(q, k, v)
    assert o.shape == (B, T, H * D)
    assert torch.allclose(o.pow(2).mean(-1), torch.ones(B, T), atol=1e-3)
    q2, k2, v2 = (z.clone() for z in (q, k, v))
    for z in (q2, k2, v2):
        z[:, 7:] = 5.0
    assert torch.allclose(memory(q2, k2, v2)[0][:, :7], o[:, :7], atol=1e-6)


@pytest.mark.parametrize("operator", ["delta_rule", "delta_product"])
def test_right_padding_leaves_real_tokens_unchanged(operator):
    memory = MemoryBranch(H, G, D, operator=operator, chunk_size=4)
    q, k, v = _raw()
    mask = torch.ones(B, T)
    mask[1, 6:] = 0
    full, _ = memory(q, k, v, mask)
    short, _ = memory(q[1:, :6], k[1:, :6], v[1:, :6])
    assert torch.allclose(full[1, :6], short[0], atol=1e-5)


@pytest.mark.parametrize("operator", ["delta_rule", "delta_rule_gelu", "delta_product", "delta_product_rotation"])
def test_decoding_with_carried_state_equals_the_full_pass(operator):
    memory = MemoryBranch(H, G, D, operator=operator, chunk_size=4)
    q, k, v = _raw(t=13)
    full, _ = memory(q, k, v)
    out, state = memory(q[:, :5], k[:, :5], v[:, :5], return_state=True)
    outs = [out]
    for t in range(5, 13):
        out, state = memory(q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], state=state, return_state=True)
        outs.append(out)
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)


def test_bidirectional_averages_the_forward_and_reversed_passes():
    causal = MemoryBranch(H, G, D, operator="delta_rule", beta_mode="constant", feature_map="l2")
    both = MemoryBranch(H, G, D, operator="delta_rule", beta_mode="constant", feature_map="l2", bidirectional=True)
    q, k, v = _raw()
    rows = causal._features(q, k, v, None)
    fwd, _ = causal._op(*rows, None, False)
    bwd, _ = causal._op(*(z.flip(1) for z in rows), None, False)
    expected = torch.nn.functional.rms_norm(((fwd + bwd.flip(1)) / 2).reshape(B, T, -1), (H * D,), eps=1e-6)
    assert torch.allclose(both(q, k, v)[0], expected, atol=1e-5)
    with pytest.raises(ValueError, match="cannot decode incrementally"):
        both(q, k, v, return_state=True)


def test_tptt_compat_reproduces_the_coded_virtual_tokens():
    memory = MemoryBranch(H, G, D, operator="delta_product", tptt_compat=True)
    q, k, v = _raw(t=4)
    q_read, k_v, _, _ = memory._features(q, k, v, None)
    qf = memory.feature(q.view(B, 4, H, D))
    assert torch.allclose(q_read[:, 1:], 0.5 * qf[:, :-1])  # readout = half the previous query
    assert torch.allclose(k_v[:, :, :, 0], -0.5 * memory.feature(k.view(B, 4, G, D)).repeat_interleave(2, 2))


def test_mix_is_exactly_the_base_output_at_zero():
    memory = MemoryBranch(H, G, D, mag_weight=0.0)
    base, other = torch.randn(2, 3), torch.randn(2, 3)
    assert memory.mix(base, other) is base
    memory.mag_weight = 0.25
    assert torch.allclose(memory.mix(base, other), 0.75 * base + 0.25 * other)


def test_bad_options_raise():
    with pytest.raises(ArchlabError, match="unknown graft operator 'delta_rul' \\(did you mean 'delta_rule'"):
        MemoryBranch(H, G, D, operator="delta_rul")
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        MemoryBranch(4, 3, D)


def test_output_is_scaled_to_the_attention_rms_unless_unit():
    q, k, v = _raw()
    target = torch.rand(B, T, 1) + 0.1
    scaled, _ = MemoryBranch(H, G, D)(q, k, v, attention_rms=target)
    assert torch.allclose(scaled.pow(2).mean(-1, keepdim=True).sqrt(), target, atol=1e-3)
    unit, _ = MemoryBranch(H, G, D, output_scale="unit")(q, k, v, attention_rms=target)
    assert torch.allclose(unit.pow(2).mean(-1), torch.ones(B, T), atol=1e-3)
