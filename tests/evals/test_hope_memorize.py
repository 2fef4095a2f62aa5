"""HOPE's fast state is wired into the eval suite's memorize protocol, and memorize never sees a scored token.

The seed's harness memorized the prompt *with its correct answer* (``--memorize-use-correct-answer``) and
re-scored memorized continual batches. Here a tiny HOPE model records every id given to ``memorize``; each
eval's scored tokens are made recognisable (upper-case answers and held-out text; needle/passkey answers
come after the question) and none of them may be among the memorized ids. Memorization must also change the
numbers, so the fast state is really used by the scoring passes.
"""

from __future__ import annotations

import random

import pytest
import torch
from tests.evals.test_mc import _write_task

from archlab.evals.continual import ContinualParams, continual
from archlab.evals.mc import MCParams, multiple_choice
from archlab.evals.niah import QUESTION as NIAH_QUESTION
from archlab.evals.niah import NIAHParams, needle_in_a_haystack
from archlab.evals.passkey import QUESTION as PASSKEY_QUESTION
from archlab.evals.passkey import PasskeyParams, passkey
from archlab.models import ARCHITECTURES, HopeConfig, HopeForCausalLM


class RecordingHope(HopeForCausalLM):
    """A HOPE model that records what it is asked to memorize."""

    def memorize(self, input_ids, attention_mask=None):
        self.memorized.append(input_ids[0].tolist())
        return super().memorize(input_ids, attention_mask)


def hope(vocab: int, block_type: str = "hope_hybrid") -> RecordingHope:
    torch.manual_seed(0)
    cfg = {**ARCHITECTURES.get("hope").tiny_config, "block_type": block_type, "teach_scale": 5.0,
           "cms_lr": 0.5, "titan_lr": 0.5}
    model = RecordingHope(HopeConfig(vocab_size=vocab, **cfg)).eval()
    model.memorized = []
    return model


@pytest.mark.parametrize("block_type", ["hope_hybrid", "hope_attention"])
def test_mc_memorizes_questions_only(byte_tok, make_ctx, tmp_path, block_type):
    model = hope(len(byte_tok), block_type)
    records = [{"context": "the sky is", "choices": ["BLUE", "GREEN"], "gold": 0},
               {"context": "grass is", "choices": ["GREEN", "RED"], "gold": 0},
               {"context": "snow is", "choices": ["WHITE", "BLACK"], "gold": 0}]
    data, _ = _write_task(tmp_path, records)
    result = multiple_choice(make_ctx(model, byte_tok), MCParams(task=str(data), memorize=True))
    seen = bytes(b for call in model.memorized for b in call if b < 256).decode()
    assert len(model.memorized) == 3 and not any(c.isupper() for c in seen)
    lls = [i["lls"] for i in result.items]
    lls_mem = [i["lls_memorize"] for i in result.items]
    assert lls != lls_mem  # the memorized fast state changes the scores


def _ends_with(call: list[int], tail: list[int]) -> bool:
    return call[-len(tail):] == tail


def test_niah_and_passkey_memorize_the_prompt_up_to_the_question(byte_tok, make_ctx):
    model = hope(len(byte_tok))
    niah = needle_in_a_haystack(make_ctx(model, byte_tok), NIAHParams(
        lengths=[160], depths=[0.5], n_per_cell=2, n_distractors=20, memorize=True))
    question = byte_tok(NIAH_QUESTION, add_special_tokens=False)["input_ids"]
    assert len(model.memorized) == 2 and all(_ends_with(c, question) for c in model.memorized)
    assert "rank_accuracy_memorize" in niah.metrics
    model.memorized = []
    passkey(make_ctx(model, byte_tok), PasskeyParams(lengths=[400], n_per_length=2, n_distractors=5, memorize=True))
    question = byte_tok(PASSKEY_QUESTION, add_special_tokens=False)["input_ids"]
    assert len(model.memorized) == 2 and all(_ends_with(c, question) for c in model.memorized)


def test_continual_memorizes_train_parts_never_heldout(byte_tok, make_ctx, tmp_path):
    rng = random.Random(0)
    paths = []
    for name, letters in (("a", "abcdefgh"), ("b", "ijklmnop")):
        train = "\n".join(" ".join("".join(rng.choices(letters, k=5)) for _ in range(8)) for _ in range(8))
        path = tmp_path / f"{name}.txt"
        path.write_text(train + "\n" + train.upper())
        paths.append(str(path))
    model = hope(len(byte_tok))
    result = continual(make_ctx(model, byte_tok), ContinualParams(
        segments=paths, train_tokens=96, heldout_tokens=64, window=32, memorize=True))
    seen = bytes(b for call in model.memorized for b in call if b < 256).decode()
    assert seen and not any(c.isupper() for c in seen)
    assert result.metrics["loss_memorize_mean"] != result.metrics["loss_mean"]


def test_memorize_continues_the_memory_and_scoring_starts_from_it():
    model = hope(64)
    a, _b = torch.randint(0, 64, (1, 10)), torch.randint(0, 64, (1, 6))
    with torch.no_grad():
        model.memorize(a)
        once = {i: dict(m) for i, m in model._memory.items()}
        model.memorize(a)
        twice = model._memory
    assert any(not torch.equal(once[i][k], twice[i][k]) for i in once for k in once[i])
