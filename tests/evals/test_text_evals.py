"""long_ppl, multilingual_bpb, compression, probes, speed: the numbers mean what they say."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from tests.evals.conftest import FakeLM, tiny_model

from archlab.evals import compression, probes
from archlab.evals.compression import CompressionParams
from archlab.evals.long_ppl import LongPPLParams, long_document_perplexity
from archlab.evals.multilingual_bpb import MultilingualParams, multilingual_bpb
from archlab.evals.probes import ProbeParams
from archlab.evals.speed import SpeedParams, speed


def test_long_ppl_equals_one_full_pass_when_the_window_covers_the_document(byte_tok, make_ctx, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("To be, or not to be, that is the question. " * 3)
    model = tiny_model(len(byte_tok))
    result = long_document_perplexity(make_ctx(model, byte_tok), LongPPLParams(source=str(doc), window=512))
    ids = list(doc.read_bytes())
    with torch.no_grad():
        full = F.cross_entropy(model(torch.tensor([ids])).logits[0, :-1], torch.tensor(ids[1:]))
    assert result.metrics["loss"] == pytest.approx(float(full), abs=1e-4)
    # one byte per token: bits per byte is the loss in bits
    assert result.metrics["bits_per_byte"] == pytest.approx(float(full) / math.log(2), abs=1e-4)
    assert result.n == len(ids) - 1


def test_multilingual_slices_have_bits_per_byte(bpe_tok, make_ctx):
    result = multilingual_bpb(make_ctx(tiny_model(len(bpe_tok)), bpe_tok), MultilingualParams(max_bytes=300))
    for name in ("quran_en", "quran_zh", "quran_ar", "lunyu_zh", "wiki", "code"):
        assert result.metrics[f"bits_per_byte/{name}"] > 0
    zh = next(i for i in result.items if i["slice"] == "quran_zh")
    assert 280 <= zh["bytes"] <= 300  # the scored bytes are the slice's bytes (first token excepted)


class Patcher(FakeLM):
    def patch_lengths(self, input_ids):
        n = input_ids.shape[1]
        return torch.tensor([4] * (n // 4) + ([n % 4] if n % 4 else []))


def test_compression_uses_patch_lengths_or_says_one_patch_per_token(byte_tok, make_ctx):
    params = CompressionParams(slices=["wiki"], max_bytes=400)
    patched = compression.compression(make_ctx(Patcher(len(byte_tok)), byte_tok), params)
    assert patched.metrics["bytes_per_patch"] == pytest.approx(4.0) and patched.details["patching"]
    plain = compression.compression(make_ctx(tiny_model(len(byte_tok)), byte_tok), params)
    assert plain.metrics["bytes_per_patch"] == 1.0 and "one patch per token" in plain.details["note"]


def test_probe_generators_have_right_answers():
    rng, params = random.Random(0), ProbeParams()
    question, gold = probes.letter_count(rng, params)
    letter, word = question.split("'")[1], question.split("'")[3]
    assert gold == str(word.count(letter))
    question, gold = probes.reversal(rng, params)
    assert gold == question.split("'")[1][::-1]
    question, gold = probes.multiplication(rng, params)
    a, b = question.removeprefix("What is ").rstrip("?").split(" * ")
    assert gold == str(int(a) * int(b))
    prompt, _ = probes.build_prompt("addition", rng, params.model_copy(update={"k_shot": 2}))
    assert prompt.count("Q: ") == 3 and prompt.endswith("A:")


class Echo(FakeLM):
    """Always continues with the bytes of ' 42\\n': right for questions whose answer is 42."""

    def forward(self, input_ids, attention_mask=None, **kwargs):
        text = bytes(input_ids[0].tolist()).decode(errors="ignore")
        written = len(text) - len(text.rsplit("A:", 1)[0]) - 2
        nxt = b" 42\n"[min(written, 3)]
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[:, -1, nxt] = 10.0
        from transformers.modeling_outputs import CausalLMOutputWithPast

        return CausalLMOutputWithPast(logits=logits)


def test_probes_exact_match_of_the_first_line(byte_tok, make_ctx, monkeypatch):
    monkeypatch.setattr(probes, "addition", lambda rng, params: ("What is 40 + 2?", "42"))
    monkeypatch.setitem(probes.GENERATORS, "addition", probes.addition)
    params = ProbeParams(tasks=["addition", "reversal"], n_per_task=3, k_shot=1)
    result = probes.probes(make_ctx(Echo(len(byte_tok)), byte_tok), params)
    assert result.metrics["accuracy/addition"] == 1.0 and result.metrics["accuracy/reversal"] == 0.0
    assert result.items[0]["answer"] == "42" and result.ci95["accuracy/addition"][1] == 1.0


def test_speed_reports_bytes_per_second_with_its_length(bpe_tok, make_ctx):
    result = speed(make_ctx(tiny_model(len(bpe_tok)), bpe_tok), SpeedParams(seq_len=32, batch_size=2,
                                                                           train_iters=1, gen_tokens=4))
    ratio = result.metrics["train_bytes_per_second"] / result.metrics["train_tokens_per_second"]
    assert 2.0 < ratio < 6.0  # the embedded BPE packs ~3 bytes of English into a token
    assert result.details["seq_len"] == 32 and "generate_bytes_per_second" in result.metrics


def test_speed_reports_mfu_from_counted_flops(bpe_tok, make_ctx):
    result = speed(make_ctx(tiny_model(len(bpe_tok)), bpe_tok), SpeedParams(seq_len=32, batch_size=2,
                                                                           train_iters=1, gen_tokens=4))
    m, d = result.metrics, result.details
    assert m["train_flops_per_second"] == pytest.approx(d["flops_per_token"] * m["train_tokens_per_second"])
    assert 0 < m["mfu"] < 1 and m["mfu"] == pytest.approx(m["train_flops_per_second"] / d["matmul_peak_flops"])
