"""continual: the forgetting matrix, and the proof that scored (held-out) tokens never reach memorize."""

from __future__ import annotations

import random

import pytest
from tests.evals.conftest import MemorizingFake, tiny_model

from archlab.errors import ArchlabError
from archlab.evals.continual import ContinualParams, continual


@pytest.fixture
def segment_files(tmp_path):
    """Three segments; in each, the train half is lower-case and the held-out half upper-case, so any
    held-out byte reaching memorize is detectable."""
    rng = random.Random(0)
    paths = []
    for name, letters in (("a", "abcdefgh"), ("b", "ijklmnop"), ("c", "qrstuvwx")):
        train = "\n".join(" ".join("".join(rng.choices(letters, k=5)) for _ in range(8)) for _ in range(12))
        held = train.upper()
        path = tmp_path / f"{name}.txt"
        path.write_text(train + "\n" + held)
        paths.append(str(path))
    return paths


def test_heldout_tokens_are_never_memorized(byte_tok, make_ctx, segment_files):
    model = MemorizingFake(len(byte_tok))
    params = ContinualParams(segments=segment_files, train_tokens=200, heldout_tokens=120, window=64, memorize=True)
    result = continual(make_ctx(model, byte_tok), params)
    given = bytes(b for call in model.memorized for b in call).decode()
    assert given and not any(c.isupper() for c in given)
    assert all(len(call) <= 64 for call in model.memorized)
    matrix = result.details["matrix_memorize"]["loss"]
    assert [len(row) for row in matrix] == [1, 2, 3]
    # held-out text is upper-case, so memory only ever holds other bytes: no segment gains, none improves later
    assert result.metrics["forgetting_mean"] >= 0
    assert set(result.details["matrix"]) == {"loss", "bits_per_byte"}


def test_memorizing_the_train_part_changes_the_loss(byte_tok, make_ctx, tmp_path):
    # here train and held-out share the alphabet, so memorization must lower the held-out loss
    text = "\n".join("abc abd abe " * 4 for _ in range(20))
    path = tmp_path / "same.txt"
    path.write_text(text)
    params = ContinualParams(segments=[str(path)], train_tokens=100, heldout_tokens=100, window=32, memorize=True)
    result = continual(make_ctx(MemorizingFake(len(byte_tok)), byte_tok), params)
    assert result.metrics[f"loss_memorize/{path}"] < result.metrics[f"loss/{path}"]


def test_static_model_and_embedded_segments(byte_tok, make_ctx):
    params = ContinualParams(segments=["shakespeare", "code"], train_tokens=32, heldout_tokens=64, window=32)
    result = continual(make_ctx(tiny_model(len(byte_tok)), byte_tok), params)
    assert "matrix_memorize" not in result.details and result.metrics["bits_per_byte/code"] > 0
    with pytest.raises(ArchlabError, match="memorize"):
        continual(make_ctx(tiny_model(len(byte_tok)), byte_tok), params.model_copy(update={"memorize": True}))
