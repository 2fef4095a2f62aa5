from __future__ import annotations

import json
import math

import pytest
import torch

from archlab.data import DataConfig, EpochSampler, build_data, load_tokenizer, token_byte_lengths
from archlab.data.build import cache_root
from archlab.errors import ArchlabError
from archlab.models.scoring import score_batch


def test_group_packing_makes_fixed_blocks_and_disjoint_seeded_splits(corpus_dir):
    cfg = DataConfig(source=str(corpus_dir), tokenizer="bytes", block_size=32, validation_fraction=0.1,
                     test_fraction=0.1)
    a, b = build_data(cfg, use_cache=False), build_data(cfg, use_cache=False)
    assert all(len(x) == 32 for x in a.train.input_ids)
    assert len(a.validation) > 0 and len(a.test) > 0
    assert all(torch.equal(x, y) for x, y in zip(a.validation.input_ids, b.validation.input_ids, strict=True))
    train_text = {tuple(x.tolist()) for x in a.train.input_ids}
    assert not any(tuple(x.tolist()) in train_text for x in a.validation.input_ids)


def test_other_split_seed_gives_other_splits(corpus_dir):
    a = build_data(DataConfig(source=str(corpus_dir), tokenizer="bytes", block_size=32), use_cache=False)
    b = build_data(DataConfig(source=str(corpus_dir), tokenizer="bytes", block_size=32, split_seed=1), use_cache=False)
    assert not all(torch.equal(x, y) for x, y in zip(a.validation.input_ids, b.validation.input_ids, strict=False))


def _alpaca_file(tmp_path, n=30):
    rows = [{"instruction": f"Add {i} and {i}.", "input": "" if i % 2 else "numbers", "output": str(2 * i)}
            for i in range(n)]
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_padding_longest_with_max_length_and_prompt_masking(tmp_path):
    path = _alpaca_file(tmp_path)
    cfg = DataConfig(source=str(path), tokenizer="bytes", packing="pad", max_length=40, mask_prompt=True,
                     validation_samples=2, test_samples=2)
    data = build_data(cfg, use_cache=False)
    assert (len(data.train), len(data.validation), len(data.test)) == (26, 2, 2)
    batch = data.batch(data.train, [0, 1, 2])
    assert batch["input_ids"].shape[1] == max(len(x) for x in data.train.input_ids[:3]) < 40
    ids, labels = data.train.input_ids[0], data.train.labels[0]
    prompt_len = int((labels == -100).sum())
    text = bytes(ids[:prompt_len].tolist()).decode()
    assert text.startswith("Add ") and text.endswith("\n")
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert data.test_prompts[0]["prompt"].startswith("Add ")


def test_dolly_records_and_alpaca_template(tmp_path):
    path = tmp_path / "dolly.jsonl"
    rows = [{"instruction": "Name a colour.", "context": "", "response": "Blue", "category": "x"}] * 25
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = build_data(DataConfig(source=str(path), tokenizer="bytes", packing="pad", template="alpaca"),
                      use_cache=False)
    text = bytes(data.train.input_ids[0][:-1].tolist()).decode()
    assert text == "### Instruction:\nName a colour.\n\n### Response:\nBlue"


def test_tokenized_data_is_cached_by_config_hash(corpus_dir):
    cfg = DataConfig(source=str(corpus_dir), tokenizer="bytes", block_size=24)
    before = set((cache_root() / "tokenized").glob("*.pt")) if (cache_root() / "tokenized").exists() else set()
    build_data(cfg)
    after = set((cache_root() / "tokenized").glob("*.pt"))
    assert len(after - before) == 1
    build_data(cfg)
    assert set((cache_root() / "tokenized").glob("*.pt")) == after
    build_data(DataConfig(source=str(corpus_dir), tokenizer="bytes", block_size=25))
    assert len(set((cache_root() / "tokenized").glob("*.pt")) - after) == 1


def test_corrupt_cache_file_is_rebuilt(corpus_dir):
    cfg = DataConfig(source=str(corpus_dir), tokenizer="bytes", block_size=20)
    first = build_data(cfg)
    newest = max((cache_root() / "tokenized").glob("*.pt"), key=lambda p: p.stat().st_mtime)
    newest.write_bytes(b"not a torch file")
    again = build_data(cfg)
    assert len(again.train) == len(first.train)


def test_embedded_corpus_and_tokenizer_round_trip():
    tok = load_tokenizer("embedded")
    text = "To be, or not to be , that is the question — ¿qué? 你好"
    assert tok.decode(tok(text)["input_ids"]) == text
    data = build_data(DataConfig(source="embedded:instructions", packing="pad", max_length=64))
    assert len(data.train) > 100 and len(data.validation) > 0


def test_token_byte_lengths_make_bits_per_byte_exact():
    tok = load_tokenizer("embedded")
    text = "Wherefore art thou Romeo? Deny thy father and refuse thy name; 1234 ünïcödé."
    ids = tok(text)["input_ids"]
    lengths = token_byte_lengths(tok)
    assert int(lengths[torch.tensor(ids)].sum()) == len(text.encode("utf-8"))
    assert lengths[tok.eos_token_id] == 0


def test_bits_per_byte_of_a_uniform_byte_model_is_eight():
    tok = load_tokenizer("bytes")

    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None):
            logits = torch.zeros(*input_ids.shape, len(tok))
            logits[..., 256:] = -1e9  # specials never predicted
            return type("Out", (), {"logits": logits})

    ids = torch.tensor([list(b"hello world, this is a test")])
    totals = score_batch(Uniform(), {"input_ids": ids, "labels": ids}, token_byte_lengths(tok))
    assert math.isclose(totals.bits_per_byte, 8.0, rel_tol=1e-6)


def test_sampler_is_a_pure_function_of_position():
    s = EpochSampler(100, 8, seed=3)
    first = [s.indices(p) for p in range(30)]
    again = EpochSampler(100, 8, seed=3)
    assert [again.indices(p) for p in reversed(range(30))] == list(reversed(first))
    epoch0 = sum(first[: s.batches_per_epoch], [])
    assert len(set(epoch0)) == len(epoch0)
    ranks = [EpochSampler(100, 4, seed=3, rank=r, world_size=2).indices(5) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("./missing/file.jsonl", "data file not found: ./missing/file.jsonl"),
        ("embedded:shakespear", "unknown embedded corpus 'shakespear' .*did you mean 'shakespeare'"),
        ("no-such-user/no-such-dataset-xyz", "could not be loaded from the Hugging Face hub .*data.source=/path"),
    ],
)
def test_bad_sources_give_one_clear_line(source, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ArchlabError, match=message):
        build_data(DataConfig(source=source), use_cache=False)


def test_unreachable_tokenizer_gives_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    load_tokenizer.cache_clear()
    with pytest.raises(ArchlabError, match="tokenizer 'no-such-org/no-such-tok' could not be loaded.*offline"):
        load_tokenizer("no-such-org/no-such-tok")


def test_pretokenized_rows_are_used_as_they_are(tmp_path):
    rows = [{"input_ids": list(range(i, i + 16)), "attention_mask": [1] * 16} for i in range(30)]
    path = tmp_path / "grouped.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = build_data(DataConfig(source=str(path), tokenizer="bytes", block_size=16, validation_samples=3),
                      use_cache=False)
    assert len(data.train) == 27 and len(data.validation) == 3
    assert all(len(x) == 16 for x in data.train.input_ids)
    firsts = sorted(int(x[0]) for x in [*data.train.input_ids, *data.validation.input_ids])
    assert firsts == list(range(30))


def test_prompt_masking_survives_group_packing():
    from archlab.data.formatting import to_prompt_completion
    from archlab.data.sources import load_records

    cfg = DataConfig(source="embedded:instructions", tokenizer="embedded", packing="group", block_size=64,
                     mask_prompt=True)
    data = build_data(cfg, use_cache=False)
    plain = build_data(cfg.model_copy(update={"mask_prompt": False}), use_cache=False)
    assert all(torch.equal(a, b) for a, b in zip(data.train.input_ids, plain.train.input_ids, strict=True))
    tok = data.tokenizer
    pairs = [to_prompt_completion(r, "alpaca", "text", "plain") for r in load_records(cfg)["train"]]
    prompt_tokens = sum(len(tok.encode(p, add_special_tokens=False)) for p, _ in pairs)
    all_tokens = sum(len(tok.encode(p, add_special_tokens=False)) + len(tok.encode(c, add_special_tokens=False)) + 1
                     for p, c in pairs)
    labels = torch.stack(data.train.labels)
    masked = float((labels == -100).float().mean())
    # equal up to the tail the last full block cuts off
    assert masked == pytest.approx(prompt_tokens / all_tokens, abs=cfg.block_size / all_tokens)
    assert masked > 0.02
    kept = labels != -100
    assert torch.equal(labels[kept], torch.stack(data.train.input_ids)[kept])


@pytest.fixture(scope="module")
def llama_style_tokenizer(tmp_path_factory):
    """A byte tokenizer that, like Llama's, puts a BOS in front of every text by default."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from archlab.data.tokenizers import EOS, PAD, byte_tokenizer

    backend = byte_tokenizer().backend_tokenizer
    backend.add_special_tokens(["<s>"])
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", bos)])
    folder = tmp_path_factory.mktemp("llama_style_tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token=EOS,
                            pad_token=PAD).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("packing", ["pad", "group"])
def test_training_starts_documents_as_evaluation_does(tmp_path, llama_style_tokenizer, packing):
    from archlab.evals.lib.loglik import encode
    from archlab.evals.lib.ppl import encode_text

    path = _alpaca_file(tmp_path)
    data = build_data(DataConfig(source=str(path), tokenizer=llama_style_tokenizer, packing=packing,
                                 block_size=16, validation_samples=2, test_samples=2), use_cache=False)
    tok = data.tokenizer
    prompt = "Add 3 and 3.\n"
    assert encode(tok, prompt)[0] == tok.bos_token_id == encode_text(tok, prompt)[0]  # evaluation's policy
    stream = torch.cat(data.train.input_ids).tolist()
    if packing == "pad":
        head = encode(tok, "Add")  # every prompt starts so: its tokens begin each example as evaluation's do
        assert all(x[: len(head)].tolist() == head for x in data.train.input_ids)
    else:  # one BOS per packed document, right after the previous document's EOS
        follows_eos = [b for a, b in zip(stream, stream[1:], strict=False) if a == tok.eos_token_id]
        assert follows_eos and all(b == tok.bos_token_id for b in follows_eos)
