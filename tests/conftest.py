"""Shared fixtures: a tiny corpus, a tiny model config, a private cache and run store per test session."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def cli(monkeypatch, capsys, *args: str, width: int = 250) -> tuple[int, str]:
    """Run ``archlab *args`` in this process; returns (exit code, stdout + stderr) at a console ``width``."""
    import sys

    from rich.console import Console

    import archlab.cli

    monkeypatch.setattr(sys, "argv", ["archlab", *args])
    monkeypatch.setattr(archlab.cli, "console", Console(width=width))
    code = 0
    try:
        archlab.cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out + out.err


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child Python that imports this checkout's archlab (src/) and tests, not an install."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), **extra}


TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64}


def tiny_decoder(vocab: int, seed: int = 0, **overrides):
    """The one tiny archlab decoder of the test suite (TINY_MODEL, no EOS so generation never stops early),
    deterministic per seed, in eval mode; ``overrides`` are config keywords."""
    from archlab.models import ArchlabTransformerConfig, ArchlabTransformerForCausalLM

    torch.manual_seed(seed)
    config = ArchlabTransformerConfig(**{**TINY_MODEL, "vocab_size": vocab, "eos_token_id": None, **overrides})
    return ArchlabTransformerForCausalLM(config).eval()


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    os.environ["ARCHLAB_CACHE"] = str(tmp_path_factory.mktemp("archlab_cache"))
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # bf16: auto would pick bf16 on a CPU with AMX; the suite's numbers are fp32 ones (the selection itself is
    # tested in tests/train/test_acceleration.py with the probe mocked)
    os.environ["ARCHLAB_NATIVE_BF16"] = "0"
    torch.set_num_threads(2)
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """A folder of 40 small text documents (a few KB each) with deterministic content."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    words = "the king queen sword crown river night day love war bread wine ship storm".split()
    for i in range(40):
        text = " ".join(rng.choice(words) for _ in range(300)) + "."
        (folder / f"doc{i:02d}.txt").write_text(text)
    return folder


def tiny_run_config(corpus_dir: Path, **train) -> dict:
    return {
        "model": {"arch": "transformer", "config": dict(TINY_MODEL)},
        "data": {"source": str(corpus_dir), "tokenizer": "bytes", "block_size": 32, "validation_fraction": 0.1},
        "train": {"max_steps": 6, "per_device_train_batch_size": 4, "logging_steps": 2, "learning_rate": 1e-3, **train},
        "eval": [{"name": "loss", "max_examples": 8}],
    }
