"""Causality of every registered architecture: changing tokens after position t never changes logits <= t.

Parametrized over ``archlab.models.ARCHITECTURES``, so a newly registered architecture is checked without
editing this file. Each is built at a tiny size from its own config class (only the size keywords that
class accepts are passed).
"""

from __future__ import annotations

import pytest
import torch

import archlab.models  # noqa: F401  (registers the architectures)
from archlab.models import ARCHITECTURES
from archlab.models.spec import config_keys

VOCAB, LENGTH, CUT = 64, 24, 13
TINY = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64, "head_dim": 8}


def build_tiny(name: str) -> torch.nn.Module:
    arch = ARCHITECTURES.get(name)
    accepted = set(config_keys(arch.config_class))
    kwargs = {k: v for k, v in TINY.items() if k in accepted} if accepted else dict(TINY)
    torch.manual_seed(0)
    return arch.model_class(arch.config_class(**kwargs)).eval()


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_future_tokens_do_not_change_past_logits(name):
    model = build_tiny(name)
    x = torch.randint(0, VOCAB, (2, LENGTH))
    y = x.clone()
    y[:, CUT + 1 :] = torch.randint(0, VOCAB, (2, LENGTH - CUT - 1))
    with torch.no_grad():
        a, b = model(input_ids=x).logits, model(input_ids=y).logits
    torch.testing.assert_close(a[:, : CUT + 1], b[:, : CUT + 1], atol=1e-5, rtol=1e-4)
    # the check can fail: the changed positions must actually change the logits there
    assert not torch.allclose(a[:, CUT + 1 :], b[:, CUT + 1 :])
