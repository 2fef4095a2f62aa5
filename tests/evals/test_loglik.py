"""The scoring primitives: lm-eval's pair split, cached = uncached, sliding windows = one full pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.evals.conftest import tiny_model

from archlab.evals.lib.loglik import PrefixState, encode_pair, score_full, token_nlls


def test_encode_pair_moves_trailing_spaces_to_the_continuation(bpe_tok):
    ctx, cont = encode_pair(bpe_tok, "The answer is ", "Paris")
    assert ctx == bpe_tok.encode("The answer is")
    assert bpe_tok.decode(ctx + cont) == "The answer is Paris"
    assert bpe_tok.decode(cont) == " Paris"


def test_prefix_state_scores_and_decodes_like_full_passes(bpe_tok):
    model = tiny_model(len(bpe_tok))
    ids = torch.randint(2, len(bpe_tok), (30,)).tolist()
    context, conts = ids[:20], [ids[20:26], ids[20:21], ids[5:15], [7, 8]]
    state = PrefixState(model, context, batch_tokens=50)  # forces several chunks
    assert state.cached
    for a, b in zip(state.score(conts), score_full(model, [(context, c) for c in conts]), strict=True):
        assert a.ll == pytest.approx(b.ll, abs=1e-4) and a.tokens == b.tokens and a.greedy == b.greedy
    out = model.generate(torch.tensor([context]), max_new_tokens=6, min_new_tokens=6, do_sample=False,
                         pad_token_id=1)
    assert state.greedy(6) == out[0, 20:].tolist()


@pytest.mark.parametrize("window,stride", [(64, None), (10, 3), (10, 9), (7, 1)])
def test_sliding_window_nll_scores_every_token_once(bpe_tok, window, stride):
    model = tiny_model(len(bpe_tok), position_embedding="learned", max_position_embeddings=64)
    ids = torch.randint(2, len(bpe_tok), (41,)).tolist()
    nll = token_nlls(model, ids, window=window, stride=stride, batch_size=3)
    assert nll.shape == (40,)
    with torch.no_grad():
        full = F.cross_entropy(model(torch.tensor([ids])).logits[0, :-1], torch.tensor(ids[1:]), reduction="none")
    # the first window sees the whole prefix, so its tokens equal the full pass exactly
    torch.testing.assert_close(nll[: window - 1], full[: window - 1], atol=1e-4, rtol=1e-4)
    if window < 41:  # later tokens lose context: a model that uses it must differ somewhere
        assert not torch.allclose(nll, full, atol=1e-4)
