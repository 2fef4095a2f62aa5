"""Every registered architecture, at its declared tiny size, passes the generic checks.

Parametrised over ``archlab.models.ARCHITECTURES`` (each entry declares ``tiny_config``): registering an
architecture is enough to be tested here.
"""

from __future__ import annotations

import pytest
import torch
from tests.models import generic

from archlab.models import ARCHITECTURES

VOCAB = 64


def build(name: str):
    arch = ARCHITECTURES.get(name)
    torch.manual_seed(0)
    return arch.model_class(arch.config_class(vocab_size=VOCAB, **arch.tiny_config)).eval()


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_causal(name):
    generic.check_causal(build(name), VOCAB)


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_cached_decoding_equals_the_full_forward(name):
    generic.check_cached_decoding(build(name), VOCAB)


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_generate(name):
    generic.check_generate(build(name), VOCAB)


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_save_load_round_trip(name, tmp_path):
    generic.check_save_load(build(name), VOCAB, tmp_path)


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_gradients_reach_every_parameter(name):
    generic.check_gradients_reach_every_parameter(build(name), VOCAB)


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_hf_embedding_accessors_find_the_vocabulary_tables(name):
    """HF's own accessors (no per-model overrides) find the input table and the head, and swap the input one."""
    model = build(name)
    table = model.get_input_embeddings()
    assert isinstance(table, torch.nn.Embedding) and table.num_embeddings == model.config.vocab_size
    assert model.get_output_embeddings() is model.lm_head
    replacement = torch.nn.Embedding(table.num_embeddings, table.embedding_dim)
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement
