"""The LSTM baseline of seed 002: the state in the Cache, padding carries it, the size matches New-LLM L=6."""

from __future__ import annotations

import torch

from archlab.models import LSTMLMConfig, LSTMLMForCausalLM, NewLLMConfig, NewLLMForCausalLM
from archlab.models.transformer import ArchlabTransformerConfig, ArchlabTransformerForCausalLM


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny():
    torch.manual_seed(0)
    return LSTMLMForCausalLM(LSTMLMConfig(vocab_size=40, embed_dim=8, hidden_size=12, num_hidden_layers=2)).eval()


def test_baselines_match_the_new_llm_size_within_two_percent():
    """Same vocab (1000): LSTM 256 -> 2 x 376 and the learned-position decoder (256 wide, 3 layers, MLP 1088,
    tied head, 128 positions) against New-LLM L=6."""
    target = count(NewLLMForCausalLM(NewLLMConfig(vocab_size=1000, num_hidden_layers=6)))
    lstm = count(LSTMLMForCausalLM(LSTMLMConfig(vocab_size=1000)))
    gpt = count(ArchlabTransformerForCausalLM(ArchlabTransformerConfig(
        vocab_size=1000, hidden_size=256, num_hidden_layers=3, num_attention_heads=4, intermediate_size=1088,
        max_position_embeddings=128, position_embedding="learned")))
    assert (target, lstm, gpt) == (2_739_432, 2_720_552, 2_757_056)
    assert abs(lstm / target - 1) < 0.02 and abs(gpt / target - 1) < 0.02


def test_masked_step_path_equals_the_fused_lstm_when_nothing_is_padded():
    model = tiny()
    x = model.embed_tokens(torch.randint(0, 40, (2, 9)))
    with torch.no_grad():
        a, (h1, c1) = model._run(x, None, None)
        b, (h2, c2) = model._run(x, None, torch.ones(2, 9, dtype=torch.bool))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close((h1, c1), (h2, c2))


def test_left_padded_generation_equals_unpadded():
    model = tiny()
    prompt = torch.randint(1, 40, (1, 5))
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), prompt], 1)
    mask = torch.cat([torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 5, dtype=torch.long)], 1)
    with torch.no_grad():
        a = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, do_sample=False,
                           pad_token_id=0)
        b = model.generate(padded, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(a[:, 5:], b[:, 7:])
