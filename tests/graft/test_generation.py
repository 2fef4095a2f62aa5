"""Decoding with the memory: the per-layer recurrent state makes incremental logits equal the full forward."""

from __future__ import annotations

import pytest
import torch
from tests.graft.conftest import FAMILIES, tiny_model, tokens
from transformers import DynamicCache

from archlab.graft import GraftConfig, apply_graft


@pytest.mark.parametrize("family", FAMILIES)
def test_incremental_logits_equal_the_full_forward(family):
    model = apply_graft(tiny_model(family), GraftConfig(operator="delta_rule", chunk_size=4))
    ids = tokens(length=15)
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config)
        steps = [model(ids[:, :6], cache=cache, use_cache=True).logits]
        steps += [model(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(6, 15)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-4)


@pytest.mark.parametrize("operator", ["delta_rule_gelu", "delta_product", "delta_product_derived_rotation"])
def test_greedy_generate_matches_the_argmax_of_the_full_forward(operator):
    model = apply_graft(tiny_model("llama"), GraftConfig(operator=operator, chunk_size=4))
    prompt = tokens(length=5)
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False)
        argmax = model(out).logits.argmax(-1)
    assert out.shape[1] == 15
    assert torch.equal(out[:, 5:], argmax[:, 4:-1])


def test_left_padded_batch_generates_like_each_prompt_alone():
    model = apply_graft(tiny_model("qwen2"), GraftConfig(operator="delta_rule", chunk_size=4, beta_mode="constant"))
    long, short = tokens(1, 7, seed=3), tokens(1, 4, seed=4)
    batch = torch.cat([long, torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1)])
    mask = torch.ones_like(batch)
    mask[1, :3] = 0
    with torch.no_grad():
        together = model.generate(batch, attention_mask=mask, max_new_tokens=6, do_sample=False)
        alone = model.generate(short, attention_mask=torch.ones_like(short), max_new_tokens=6, do_sample=False)
    assert torch.equal(together[1, 7:], alone[0, 4:])
