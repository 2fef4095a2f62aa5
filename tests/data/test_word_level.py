"""Seed 002's word-level data: vocabulary, UNK, BOS/EOS lines, 64/32 windows, padding never scored."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from archlab.data import DataConfig, build_data
from archlab.data.formatting import to_prompt_completion
from archlab.data.word_level import SPECIALS, build_vocabulary, windows, word_level_tokenizer
from archlab.errors import ArchlabError
from archlab.evals.base import EvalContext
from archlab.evals.unk_share import UnkShareParams, unk_share


def test_vocabulary_is_the_specials_then_the_most_frequent_lowercase_words():
    texts = ["The cat saw the dog", "the Dog saw a bird", "zebra"]
    vocab = build_vocabulary(texts, vocab_size=7)
    # the:3, dog:2, saw:2 (tie broken alphabetically), then the first of the 1-count words
    assert vocab == [*SPECIALS, "the", "dog", "saw"]
    assert len(build_vocabulary(texts, vocab_size=1000)) == 4 + 7  # fewer distinct words than room


def test_tokenizer_lowercases_maps_unknown_words_to_unk_and_wraps_in_bos_eos():
    tok = word_level_tokenizer([*SPECIALS, "the", "dog", "saw"])
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    assert tok("The DOG saw a zebra")["input_ids"] == [2, 4, 5, 6, 1, 1, 3]
    assert tok.encode("the dog", add_special_tokens=False) == [4, 5]
    assert tok.decode([2, 4, 5, 1, 3], skip_special_tokens=True) == "the dog"


def test_tokenizer_survives_save_pretrained(tmp_path):
    tok = word_level_tokenizer([*SPECIALS, "the", "dog"])
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded("The dog barks")["input_ids"] == tok("The dog barks")["input_ids"] == [2, 4, 5, 1, 3]
    assert len(loaded) == 6


@pytest.mark.parametrize(("n", "expected"), [(10, 1), (64, 1), (65, 2), (96, 2), (97, 3), (100, 3), (160, 4)])
def test_windows_of_64_with_stride_32(n, expected):
    ids = list(range(n))
    out = windows(ids, 64, 32)
    assert len(out) == expected
    assert all(len(w) <= 64 for w in out)
    assert [w[0] for w in out] == [32 * k for k in range(expected)]
    assert out[-1][-1] == n - 1  # every token is covered
    assert windows(ids, 64, None) == [ids[:64]]


def write_corpus(folder, train_lines, validation_lines):
    folder.mkdir()
    for name, lines in (("train", train_lines), ("validation", validation_lines)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    return folder


def word_data(folder, **kw):
    options = dict(source=str(folder), tokenizer="word_level", packing="pad", max_length=8, padding="max_length",
                   word_level={"vocab_size": 10, "stride": 4}, validation_fraction=0.0)
    options.update(kw)
    return build_data(DataConfig(**options), use_cache=False)


def test_lines_windows_and_the_vocabulary_come_from_the_training_split(tmp_path):
    train = ["a b c d e", "a b c d e f g h i j", "too short line", "a a a b b c"] * 6
    folder = write_corpus(tmp_path / "corpus", train, ["a b c d novel", "x y"])
    data = word_data(folder)
    tok = data.tokenizer
    assert len(tok) == 10 and "novel" not in tok.get_vocab()  # built on train only
    assert tok.convert_ids_to_tokens([4, 5, 6]) == ["a", "b", "c"]
    # per 4 lines: 7 tokens -> 1 window; 12 tokens -> windows at 0, 4 (4 + 8 >= 12) ; 3 words dropped; 8 -> 1
    assert len(data.train) == 6 * (1 + 2 + 1)
    assert len(data.validation) == 1  # "x y" has fewer than 5 words
    assert data.validation.input_ids[0].tolist() == [2, 4, 5, 6, 7, 1, 3]  # novel -> UNK
    first = data.train.input_ids[0].tolist()
    assert first[0] == 2 and first[-1] == 3


def test_padding_is_never_a_target(tmp_path):
    folder = write_corpus(tmp_path / "corpus", ["a b c d e"] * 24, ["a b c d e"])
    data = word_data(folder)
    batch = data.batch(data.train, [0, 1])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["input_ids"][0].tolist() == [2, 4, 5, 6, 7, 8, 3, 0]  # right-padded with PAD = 0
    targets = batch["labels"][:, 1:]
    assert (targets[batch["input_ids"][:, 1:] == 0] == -100).all()
    assert not (targets == 0).any()


def test_unk_share_eval_counts_scored_targets(tmp_path):
    folder = write_corpus(tmp_path / "corpus", ["a b c d e"] * 24, ["a b zz yy e", "a b c d e"])
    data = word_data(folder)
    ctx = EvalContext(model=torch.nn.Linear(1, 1), tokenizer=data.tokenizer, data=data, run_dir=tmp_path)
    result = unk_share(ctx, UnkShareParams())
    # targets: 6 per line (5 words + EOS), 2 UNK in the first
    assert result.n == 12
    assert result.metrics["unk_share"] == pytest.approx(2 / 12)


def test_dolly_records_use_the_labeled_template_and_are_truncated(tmp_path):
    record = {"instruction": "Name a fruit", "context": "", "response": "An apple is a fruit"}
    assert to_prompt_completion(record, "dolly", "text", "labeled") == ("Instruction: Name a fruit\nResponse: ",
                                                                         "An apple is a fruit")
    with_context = {**record, "context": "Fruits grow"}
    assert to_prompt_completion(with_context, "dolly", "text", "labeled")[0] == (
        "Instruction: Name a fruit\nContext: Fruits grow\nResponse: ")
    folder = tmp_path / "dolly"
    folder.mkdir()
    rows = [{**record, "response": "an apple is a fruit " * 5}] * 30
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = build_data(DataConfig(source=str(folder), tokenizer="word_level", template="labeled", packing="pad",
                                 max_length=16, word_level={"unit": "record", "stride": None}), use_cache=False)
    assert all(len(x) == 16 for x in data.train.input_ids)  # truncated, one example per record
    assert data.tokenizer.convert_ids_to_tokens(data.train.input_ids[0][:4].tolist()) == [
        "<bos>", "instruction:", "name", "a"]
    assert data.test_prompts[0]["prompt"] == "Instruction: Name a fruit\nResponse:"


def test_word_level_needs_pad_packing():
    with pytest.raises(ValueError, match="packing: pad"):
        DataConfig(tokenizer="word_level")
    with pytest.raises(ArchlabError, match="word_level.vocb_size|vocb_size"):
        DataConfig.parse({"tokenizer": "word_level", "packing": "pad", "word_level": {"vocb_size": 3}})


def test_generated_samples_show_unk(tmp_path):
    """A closed-vocabulary model's UNK predictions stay visible in samples.jsonl (other specials are dropped)."""
    import json as _json

    from archlab.evals.generate_samples import SampleParams, generate_samples
    from archlab.models import NewLLMConfig, NewLLMForCausalLM

    tok = word_level_tokenizer([*SPECIALS, "the", "dog"])
    model = NewLLMForCausalLM(NewLLMConfig(vocab_size=len(tok), embed_dim=8, context_dim=4, hidden_size=8,
                                           num_hidden_layers=1)).eval()
    with torch.no_grad():
        model.lm_head.bias.copy_(torch.tensor([0.0, 50.0, 0.0, 0.0, 0.0, 0.0]))  # always UNK
    ctx = EvalContext(model=model, tokenizer=tok, data=None, run_dir=tmp_path)
    generate_samples(ctx, SampleParams(prompts=["the dog"], max_new_tokens=3))
    row = _json.loads((tmp_path / "samples.jsonl").read_text().splitlines()[0])
    assert row["completion"] == "<unk> <unk> <unk>"
