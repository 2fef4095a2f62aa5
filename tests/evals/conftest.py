"""Tiny models for the eval tests: archlab's baseline, a memorizing fake that records its inputs, and
an induction oracle that copies what followed the longest earlier match (it solves needle/passkey)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.conftest import tiny_decoder
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from archlab.data import load_tokenizer
from archlab.evals import EvalContext


def tiny_model(vocab: int, **kw):
    """The suite's tiny decoder with RoPE and room for long eval prompts."""
    return tiny_decoder(vocab, **{"max_position_embeddings": 1024, "position_embedding": "rope", **kw})


@pytest.fixture(scope="session")
def byte_tok():
    return load_tokenizer("bytes")


@pytest.fixture(scope="session")
def bpe_tok():
    return load_tokenizer("embedded")


@pytest.fixture
def make_ctx(tmp_path):
    def make(model, tok, **kw) -> EvalContext:
        return EvalContext(model, tok, None, Path(tmp_path) / "run", **kw)

    return make


class FakeLM(nn.Module):
    """A stateless causal LM over ``vocab`` ids with no cache: subclasses define ``next_logits``."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(1))

    def next_logits(self, row: list[int], t: int) -> torch.Tensor:
        return torch.zeros(self.vocab)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        batch, length = input_ids.shape
        logits = torch.zeros(batch, length, self.vocab)
        for b in range(batch):
            row = input_ids[b].tolist()
            for t in range(length):
                logits[b, t] = self.next_logits(row, t)
        return CausalLMOutputWithPast(logits=logits)


class InductionOracle(FakeLM):
    """Predicts the token that followed the longest earlier match of the current suffix (last 24 positions
    only, uniform before: enough for answers at the end of a prompt)."""

    def next_logits(self, row: list[int], t: int) -> torch.Tensor:
        out = torch.zeros(self.vocab)
        if t < len(row) - 24:
            return out
        best, best_len = None, 0
        for s in range(t - 1, -1, -1):
            n = 0
            while n <= s and n < 32 and row[s - n] == row[t - n]:
                n += 1
            if n > best_len:
                best, best_len = row[s + 1], n
        if best is not None:
            out[best] = 10.0
        return out


class MemorizingFake(FakeLM):
    """Records every ``memorize`` call; memorized ids become more likely (so memorizing changes the loss)."""

    def __init__(self, vocab: int):
        super().__init__(vocab)
        self.memorized: list[list[int]] = []
        self.memory: set[int] = set()
        self.resets = 0

    def memorize(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        assert input_ids.shape == attention_mask.shape
        ids = input_ids[0].tolist()
        self.memorized.append(ids)
        self.memory.update(ids)

    def reset_memory(self) -> None:
        self.memory = set()
        self.resets += 1

    def forward(self, input_ids, attention_mask=None, **kwargs):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        if self.memory:
            logits[..., sorted(self.memory)] = 2.0
        return CausalLMOutputWithPast(logits=logits)
