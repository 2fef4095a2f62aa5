"""Every registered mixer, alone and in a hybrid with attention, passes the generic checks.

Parametrised over ``archlab.nn.MIXERS``: registering a mixer is enough to be tested here.
"""

from __future__ import annotations

import pytest
from tests.conftest import tiny_decoder
from tests.models import generic

from archlab.nn import MIXERS

VOCAB = 53
LAYOUTS = [(name, pattern) for name in MIXERS.names() for pattern in ([name], [name, "attention"])
           if pattern != ["attention", "attention"]]


def factory(pattern: list[str]):
    def build():
        return tiny_decoder(VOCAB, position_embedding="rope", pattern=pattern)

    return build


IDS = ["+".join(p) for _, p in LAYOUTS]


@pytest.mark.parametrize(("name", "pattern"), LAYOUTS, ids=IDS)
def test_causal(name, pattern):
    generic.check_causal(factory(pattern)(), VOCAB)


@pytest.mark.parametrize(("name", "pattern"), LAYOUTS, ids=IDS)
def test_cached_decoding_equals_the_full_forward(name, pattern):
    generic.check_cached_decoding(factory(pattern)(), VOCAB)


@pytest.mark.parametrize(("name", "pattern"), LAYOUTS, ids=IDS)
def test_generate(name, pattern):
    generic.check_generate(factory(pattern)(), VOCAB)


@pytest.mark.parametrize(("name", "pattern"), LAYOUTS, ids=IDS)
def test_save_load_round_trip(name, pattern, tmp_path):
    generic.check_save_load(factory(pattern)(), VOCAB, tmp_path)


@pytest.mark.parametrize(("name", "pattern"), LAYOUTS, ids=IDS)
def test_gradients_reach_every_parameter(name, pattern):
    generic.check_gradients_reach_every_parameter(factory(pattern)(), VOCAB)
