"""torch.compile traces the training step of every registered architecture and mixer as ONE graph.

A graph break splits the compiled step into pieces with eager Python in between (slower, and a recompile
risk). ``fullgraph=True`` turns any break into an error; the ``aot_eager`` backend traces the backward too
(AOTAutograd's joint graph) without paying for Inductor's code generation. Each training batch carries an
attention mask, as the trainer's collate makes it; under compile a given mask is always applied (whether it
pads is not read off the tensor), so one right-padded batch covers the all-ones case too.

Parametrised over ``ARCHITECTURES`` and ``MIXERS``: a newly registered one is covered without editing this
file. ``ALLOWED_BREAKS`` lists the ones that genuinely cannot be traced whole, each with its reason.
"""

from __future__ import annotations

import pytest
import torch
from tests.conftest import tiny_decoder

from archlab.models import ARCHITECTURES
from archlab.nn import MIXERS
from archlab.train.acceleration import compile_scope

VOCAB = 64

# name -> why it cannot be one graph (empty: every architecture and mixer traces whole today)
ALLOWED_BREAKS: dict[str, str] = {}


def _batch(length: int) -> dict:
    ids = torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(1))
    padded = torch.ones_like(ids)
    padded[1, length - 5 :] = 0
    return {"input_ids": ids, "attention_mask": padded, "labels": ids.masked_fill(padded == 0, -100)}


def assert_one_graph(model: torch.nn.Module, name: str, length: int = 19) -> None:
    """Forward + loss + backward compile with fullgraph=True, and match eager (loss and gradients)."""
    if name in ALLOWED_BREAKS:
        pytest.skip(f"{name}: {ALLOWED_BREAKS[name]}")
    model.train()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for batch in [_batch(length)]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(2)  # dropout / noise draw the same numbers in both runs
        eager = model(**batch).loss
        eager.backward()
        want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        torch.manual_seed(2)
        with compile_scope():  # the trainer's dynamo settings
            loss = compiled(**batch).loss  # raises torch._dynamo.exc.Unsupported on a graph break
            loss.backward()
        torch.testing.assert_close(loss, eager, atol=1e-5, rtol=1e-5)
        got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert got.keys() == want.keys()
        for n in want:
            torch.testing.assert_close(got[n], want[n], atol=1e-5, rtol=1e-4, msg=n)
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_architecture_training_step_is_one_graph(name):
    arch = ARCHITECTURES.get(name)
    torch.manual_seed(0)
    model = arch.model_class(arch.config_class(vocab_size=VOCAB, **arch.tiny_config))
    assert_one_graph(model, name)


@pytest.mark.slow  # ~10 s each on a quiet 2-core machine (the architecture test covers the default mixer)
@pytest.mark.parametrize("name", MIXERS.names())
def test_mixer_training_step_is_one_graph(name):
    assert_one_graph(tiny_decoder(VOCAB, position_embedding="rope", pattern=[name]), f"mixer:{name}")


def test_learned_positions_checked_without_a_tensor_read():
    """The position bound of learned embeddings holds in eager mode and never reads a tensor when compiled."""
    model = tiny_decoder(VOCAB, max_position_embeddings=16)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(input_ids=torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(input_ids=torch.zeros(1, 4, dtype=torch.long), position_ids=torch.tensor([[0, 1, 2, 16]]))
    assert_one_graph(model, "transformer-learned", length=12)
