"""The embedded byte-level BPE tokenizer, trained on the train splits of the four corpora."""

from __future__ import annotations

from scripts.build_embedded.common import BuildError

VOCAB_SIZE = 8192
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]


def train_tokenizer(train_texts: list[str]):
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as exc:
        raise BuildError("the 'tokenizers' package is required: pip install tokenizers") from exc
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(train_texts, trainer=trainer, length=len(train_texts))
    for i, special in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(special) != i:
            raise BuildError(f"special token {special!r} did not get id {i}")
    return tok


def check_tokenizer(tok) -> None:
    samples = [
        "Hello, world!",
        "  leading spaces and\ttabs\n\nnewlines  ",
        "To be, or not to be: that is the question.",
        "def f(x):\n    return {'a': [1, 2.5e-3]}  # comment\n",
        "Ünïcödé — “quotes”, emoji 🎭🐍, CJK 漢字, Ελληνικά, العربية",
        "<|endoftext|> is special",
    ]
    for s in samples:
        if tok.decode(tok.encode(s).ids, skip_special_tokens=False) != s:
            raise BuildError(f"tokenizer does not round-trip {s!r}")
