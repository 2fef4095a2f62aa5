"""Bits per byte covers the same tokens in its numerator and denominator: special tokens (no bytes) add
nats to the loss but nothing to bits per byte."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tests.evals.conftest import tiny_model

from archlab.data import load_tokenizer, token_byte_lengths
from archlab.evals.base import EvalContext
from archlab.evals.lib.ppl import stream_loss
from archlab.models.scoring import score_batch


@pytest.fixture(scope="module")
def packed():
    tok = load_tokenizer("embedded")
    docs = ["To be, or not to be.", "That is the question.", "Whether 'tis nobler."]
    ids = [i for d in docs for i in tok.encode(d, add_special_tokens=False) + [tok.eos_token_id]]
    return tok, ids


def _per_token_nll(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    return F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")


def test_special_tokens_count_in_the_loss_not_in_bits_per_byte(packed):
    tok, ids = packed
    model = tiny_model(len(tok))
    sizes = token_byte_lengths(tok)
    targets = torch.tensor(ids[1:])
    nll = _per_token_nll(model, ids)
    text = sizes[targets] > 0
    assert (~text).sum() == 3  # the EOS of each document
    totals = score_batch(model, {"input_ids": torch.tensor([ids]), "labels": torch.tensor([ids])}, sizes)
    assert totals.loss == pytest.approx(float(nll.mean()), rel=1e-5)  # EOS stays in the loss
    expected = float(nll[text].sum()) / math.log(2) / int(sizes[targets].sum())
    assert totals.bits_per_byte == pytest.approx(expected, rel=1e-5)
    assert totals.bits_per_byte < float(nll.sum()) / math.log(2) / int(sizes[targets].sum())


def test_stream_loss_leaves_special_tokens_out_of_bits_per_byte(packed, tmp_path):
    tok, ids = packed
    model = tiny_model(len(tok))
    totals, nll = stream_loss(EvalContext(model, tok, None, tmp_path), ids, window=len(ids))
    sizes = token_byte_lengths(tok)[torch.tensor(ids[1:])]
    expected = float(nll[sizes > 0].sum()) / math.log(2) / int(sizes.sum())
    assert totals.bits_per_byte == pytest.approx(expected, rel=1e-5)
    assert totals.loss == pytest.approx(float(nll.mean()), rel=1e-6)
