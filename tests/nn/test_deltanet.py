"""DeltaNet / Gated DeltaNet mixers: the chunked op equals the token loop inside the layer, padding writes
nothing, the decay is Mamba-2's, options are typed, and on CUDA the fla kernels give the same numbers."""

from __future__ import annotations

import pytest
import torch

from archlab.errors import ArchlabError
from archlab.nn import MIXERS, BlockDims

DIMS = BlockDims(hidden_size=32, num_heads=4, num_kv_heads=4)


def build(name: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = MIXERS.get(name)
    return cls(DIMS, cls.parse_options(options), 0)


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet"])
@pytest.mark.parametrize("length", [1, 7, 23])
def test_chunked_layer_equals_the_token_loop_in_outputs_and_gradients(name, length):
    x = torch.randn(2, length, 32, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for impl in ("chunk", "naive"):
        layer = build(name, impl=impl, chunk_size=4).double()
        y = layer(x)
        (g,) = torch.autograd.grad((y * torch.linspace(-1, 1, 32, dtype=torch.float64)).sum(), x)
        outs.append(y)
        grads.append(g)
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet"])
def test_a_left_padded_row_gives_the_outputs_of_the_unpadded_row(name):
    layer = build(name).eval()
    x = torch.randn(1, 6, 32)
    padded = torch.cat([torch.randn(1, 3, 32) * 5, x], dim=1)  # garbage at the padding positions
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        alone, together = layer(x), layer(padded, attention_mask=mask)
    torch.testing.assert_close(together[:, 3:], alone, atol=1e-5, rtol=1e-4)


def test_gated_decay_is_mamba2s_and_vanishes_with_a_zero_rate():
    layer = build("gated_deltanet")
    x = torch.randn(2, 5, 32)
    g = -layer.A_log.exp() * torch.nn.functional.softplus(layer.a_proj(x) + layer.dt_bias)
    assert (g < 0).all()
    # with A -> 0 the state never decays: the layer equals DeltaNet with the same weights
    plain = build("deltanet", expand_v=2.0)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if k in plain.state_dict()})
    with torch.no_grad():
        layer.A_log.fill_(-80.0)
        torch.testing.assert_close(layer(x), plain(x), atol=1e-5, rtol=1e-4)


def test_negative_eigenvalues_double_beta():
    torch.manual_seed(0)
    x = torch.randn(1, 9, 32)
    a, b = build("deltanet"), build("deltanet", allow_neg_eigval=True)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))  # beta in (0, 2) changes the writes


def test_a_misspelt_option_names_the_closest_key():
    with pytest.raises(ArchlabError, match=r"conv_sise.*did you mean 'conv_size'"):
        MIXERS.get("deltanet").parse_options({"conv_sise": 3})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (and fla for the Triton path)")
@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet"])
def test_fla_kernels_match_the_chunked_torch_op_on_cuda(name):
    from archlab.ops import has_fla

    if not has_fla():
        pytest.skip("flash-linear-attention is not installed")
    x = torch.randn(2, 100, 32, device="cuda", dtype=torch.bfloat16)
    fast = build(name, impl="auto").cuda().bfloat16()
    ref = build(name, impl="chunk").cuda().bfloat16()
    ref.load_state_dict(fast.state_dict())
    torch.testing.assert_close(fast(x).float(), ref(x).float(), atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("mixer", ["deltanet", "gated_deltanet"])
def test_trains_under_cpu_bf16_autocast_like_fp32(mixer):
    """bf16: auto picks CPU autocast on AMX machines; the op runs in float32 inside it (CPU has no bf16
    triangular solve), so a step under autocast works and stays close to the fp32 one."""
    from tests.conftest import tiny_decoder

    torch.manual_seed(0)
    model = tiny_decoder(64, pattern=[mixer])
    ids = torch.randint(0, 64, (2, 21))
    want = model(input_ids=ids, labels=ids).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(input_ids=ids, labels=ids).loss
    got.backward()
    assert torch.isfinite(got) and abs(float(got) - float(want)) < 0.05
