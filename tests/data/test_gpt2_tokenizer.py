"""The shipped GPT-2 BPE (embedded/gpt2) encodes as GPT-2 does, offline, and seed 001's <|MASK|> is id 50257."""

from __future__ import annotations

import pytest

from archlab.data.tokenizers import gpt2_tokenizer, leading_special_ids, load_tokenizer

# Well-known GPT-2 ids (OpenAI's encoder.json): "Hello"=15496, " world"=995, " The"=383, "."=13, EOS=50256
KNOWN = {
    "Hello world": [15496, 995],
    " The quick brown fox jumps over the lazy dog.": [383, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13],
    "I'm": [40, 1101],
    "<|endoftext|>": [50256],
}


@pytest.mark.parametrize("text", list(KNOWN))
def test_gpt2_encodings_match_gpt2(text):
    assert gpt2_tokenizer().encode(text) == KNOWN[text]


def test_gpt2_round_trips_bytes_and_adds_no_leading_token():
    tok = load_tokenizer("gpt2")
    text = "Héllo  wörld\n\ttabs 漢字 🙂"
    assert tok.decode(tok.encode(text)) == text
    assert leading_special_ids(tok) == [] and len(tok) == 50257 and tok.eos_token_id == 50256


def test_gpt2_mask_adds_one_special_token_at_the_end():
    tok = load_tokenizer("gpt2+mask")
    assert len(tok) == 50258 and tok.mask_token == "<|MASK|>" and tok.mask_token_id == 50257
    assert tok.encode("a<|MASK|>b") == [64, 50257, 65]  # special: never split into BPE pieces
    assert load_tokenizer("gpt2").mask_token_id is None  # the cached plain tokenizer is untouched


def test_pretokenized_grouped_rows_are_used_as_they_are(tmp_path):
    """Seed 001's hub data is input_ids already grouped into blocks: no re-tokenisation, no regrouping."""
    import json

    import torch

    from archlab.data import DataConfig, build_data

    rng = torch.Generator().manual_seed(0)
    rows = {split: torch.randint(0, 50258, (n, 16), generator=rng).tolist() for split, n in (("train", 30),
                                                                                            ("validation", 4))}
    for split, blocks in rows.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps({"input_ids": b, "attention_mask": [1] * 16})
                                                         + "\n" for b in blocks))
    data = build_data(DataConfig(source=str(tmp_path), tokenizer="gpt2+mask", block_size=16), use_cache=False)
    assert [x.tolist() for x in data.train.input_ids] == rows["train"]
    assert [x.tolist() for x in data.validation.input_ids] == rows["validation"]
    assert all(torch.equal(x, y) for x, y in zip(data.train.input_ids, data.train.labels, strict=True))
    assert len(data.tokenizer) == 50258
