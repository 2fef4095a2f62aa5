"""Incremental decoding of the byte latent model: a prefill then steps of one or two bytes through one Cache give
the logits of one full forward (every patch configuration, odd lengths, rows whose lines and patches end at
different bytes, latent buffers that grow), greedy ``generate`` with the cache equals it without, and the
cache holds O(1) per byte outside the latent keys (no copy of the bytes seen)."""

from __future__ import annotations

import pytest
import torch
from tests.models.test_byte_latent import CONFIGS, VOCAB, build
from transformers import DynamicCache

from archlab.models.byte_latent_decode import _streamed_entropies, can_stream
from archlab.nn.cache import StateLayer, states_of

LENGTH = 37  # odd; > 16 patches with 1-byte patches, so the latent buffers grow past their first capacity


def text(batch: int = 3, length: int = LENGTH, seed: int = 3) -> torch.Tensor:
    x = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    x[x == 10] = 11
    for row, newline in enumerate([7, 12, 29][:batch]):  # each row's line restarts the entropy context elsewhere
        if newline < length:
            x[row, newline] = 10
    return x


def decode(model, x: torch.Tensor, prefill: int) -> tuple[torch.Tensor, DynamicCache]:
    cache = DynamicCache(config=model.config)
    parts = [model(input_ids=x[:, :prefill], cache=cache, use_cache=True).logits]
    t = prefill
    while t < x.shape[1]:
        step = 2 if t % 5 == 0 else 1  # mostly single bytes, sometimes two at once
        parts.append(model(input_ids=x[:, t : t + step], cache=cache, use_cache=True).logits)
        t += step
    return torch.cat(parts, 1), cache


@pytest.mark.parametrize("prefill", [1, 6])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_decoding_with_the_cache_equals_the_full_forward(name, prefill):
    model = build(**CONFIGS[name]).double()
    x = text()
    with torch.no_grad():
        full = model(input_ids=x).logits
        stepped, cache = decode(model, x, prefill)
    torch.testing.assert_close(stepped, full, atol=1e-10, rtol=1e-10)
    state = states_of(cache, 0)
    starts = model.patch_starts(x)
    completed = starts[:, 1:].sum(1)  # bytes that end a patch
    assert state.get("patches").tolist() == completed.tolist()
    assert state.seen_tokens == LENGTH


@pytest.mark.parametrize("name", ["entropy_global_and_relative", "entropy_no_newline_reset"])
def test_the_entropy_models_cache_gives_the_entropies_of_each_line_read_alone(name):
    """Streamed with its own keys/values (a newline: BOS at position 0, the row's earlier keys masked), the entropy
    model gives ``byte_entropies``' numbers, whose lines each run alone behind a BOS."""
    model = build(**CONFIGS[name]).double()
    x = text()
    state = StateLayer()
    with torch.no_grad():
        parts = [_streamed_entropies(model, x[:, :4], state)]
        parts += [_streamed_entropies(model, x[:, t : t + 3], state)[:, 1:] for t in range(4, LENGTH, 3)]
        torch.testing.assert_close(torch.cat(parts, 1), model.entropies(x), atol=1e-12, rtol=1e-12)
    # BOS + the bytes; with restarts the keys before row 0's line (bytes 0..7, which no row reads) are dropped
    width = LENGTH + 1 - (8 if model.config.reset_at_newline else 0)
    assert state.get("entropy_mask").shape == (3, width) and state.get("entropy.0.keys").shape[2] == width


@pytest.mark.parametrize("name", ["entropy_global_and_relative", "entropy_no_newline_reset"])
def test_an_entropy_model_without_a_maskable_cache_re_reads_the_current_lines(name):
    model = build(**CONFIGS[name]).double()
    model.entropy_model._archlab_streams = False  # as for a recurrent entropy model
    x = text()
    with torch.no_grad():
        stepped, cache = decode(model, x, 6)
        torch.testing.assert_close(stepped, model(input_ids=x).logits, atol=1e-10, rtol=1e-10)
    context = states_of(cache, 0).get("context")
    # with restarts, only the batch's current lines: from byte 8 on (row 0's line starts there)
    assert context.shape == (3, LENGTH - 8 if name == "entropy_global_and_relative" else LENGTH)


def test_the_cache_keeps_no_copy_of_the_bytes_seen():
    model = build(**CONFIGS["entropy_global_and_relative"])
    assert can_stream(model.entropy_model)
    x = text()
    with torch.no_grad():
        states = [states_of(decode(model, x[:, :length], 6)[1], 0) for length in (LENGTH - 10, LENGTH)]
    assert states[1].get("bytes") is None and states[1].get("context") is None
    growing = ("latent.", "entropy.", "entropy_mask")  # keys/values (and their mask) of what attention reads
    for name, value in states[1].states.items():  # the rest does not grow with the bytes seen
        if not name.startswith(growing):
            assert value.shape == states[0].get(name).shape, name


@pytest.mark.parametrize("name", ["static4", "entropy_global_and_relative"])
def test_greedy_generate_with_the_cache_equals_without(name):
    model = build(**CONFIGS[name])
    prompt = text(length=9)
    kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=14, min_new_tokens=14, do_sample=False,
                  pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **kwargs)
        uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert cached.shape == (3, 23)
    assert torch.equal(cached, uncached)
