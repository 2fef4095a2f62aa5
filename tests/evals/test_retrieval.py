"""niah and passkey: exact lengths in the model's tokens, the needle where asked, an oracle scores 1.0,
and memorization never sees the answer."""

from __future__ import annotations

import random

import pytest
from tests.evals.conftest import FakeLM, InductionOracle, MemorizingFake, tiny_model

from archlab.evals import niah, passkey
from archlab.evals.lib import retrieval
from archlab.evals.niah import NIAHParams, needle_in_a_haystack
from archlab.evals.passkey import PasskeyParams


@pytest.mark.parametrize("tok_name", ["byte_tok", "bpe_tok"])
@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_niah_prompt_has_the_nominal_length_and_depth(request, tok_name, depth):
    tok = request.getfixturevalue(tok_name)
    sentences = niah._encoded_sentences(tok, "wiki")
    prompt, real = niah.build_prompt(tok, sentences, 300, depth, "482913", random.Random(0))
    text = tok.decode(prompt)
    assert len(prompt) == 300 and text.count("482913") == 1
    assert abs(real - depth) < 0.06
    needle = niah.NEEDLE.format(key="482913")
    hay_chars = len(text) - len(niah.QUESTION) - len(needle)
    assert abs(text.index(needle) / hay_chars - depth) < 0.1


def test_passkey_prompt_has_the_nominal_length(bpe_tok):
    prompt, depth = passkey.build_prompt(bpe_tok, 200, "12345", random.Random(1))
    text = bpe_tok.decode(prompt)
    assert len(prompt) == 200 and text.count("12345") == 2 and text.endswith("The pass key is")
    assert 0.0 <= depth <= 1.0


def test_niah_with_an_induction_oracle_is_perfect_and_random_model_is_not(byte_tok, make_ctx):
    params = NIAHParams(lengths=[160], depths=[0.0, 1.0], n_per_cell=2, key_digits=4)
    oracle = needle_in_a_haystack(make_ctx(InductionOracle(len(byte_tok)), byte_tok), params)
    assert oracle.metrics["exact_match"] == 1.0 and oracle.metrics["rank_accuracy"] == 1.0
    assert oracle.n == 4 and len(oracle.details["grid"]) == 2 and oracle.ci95["exact_match"][0] > 0.3
    assert all(cell["tokens"] == 160 for cell in oracle.details["grid"])
    chance = needle_in_a_haystack(make_ctx(tiny_model(len(byte_tok)), byte_tok), params)
    assert chance.metrics["exact_match"] == 0.0


def test_passkey_with_an_induction_oracle_is_perfect(byte_tok, make_ctx):
    result = passkey.passkey(make_ctx(InductionOracle(len(byte_tok)), byte_tok),
                             PasskeyParams(lengths=[400], n_per_length=3, n_distractors=20))
    assert result.metrics["exact_match"] == 1.0 and result.metrics["exact_match@400"] == 1.0


def test_memorize_gets_the_prompt_never_the_key_answer(byte_tok, make_ctx):
    model = MemorizingFake(len(byte_tok))
    params = NIAHParams(lengths=[120], depths=[0.5], n_per_cell=2, key_digits=4, memorize=True)
    result = needle_in_a_haystack(make_ctx(model, byte_tok), params)
    assert len(model.memorized) == 2 and "rank_accuracy_memorize" in result.metrics
    for call, item in zip(model.memorized, result.items, strict=True):
        text = bytes(call).decode()
        assert text.endswith("The secret key is")  # the question, not the answer after it
        assert len(call) == 120 and text.count(item["key"]) == 1  # the key only inside the needle


def test_a_tie_with_a_distractor_is_a_miss(byte_tok, make_ctx):
    # a uniform model gives the key and every distractor the same log-likelihood: it must not rank first
    ctx = make_ctx(FakeLM(len(byte_tok)), byte_tok)
    prompt = list(b"The secret key is")
    scored = retrieval.score_item(ctx, prompt, "1234", ["5678", "9012"], memorize=False, max_new_tokens=2)
    assert scored.rank == 3
    assert retrieval.summarize([scored.to_dict()])["rank_accuracy"] == 0.0
