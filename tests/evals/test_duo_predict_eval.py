"""The duo_predict eval scores the real stream exactly as the plain next-token loss does, and the M stream apart."""

from __future__ import annotations

import pytest
import torch

from archlab.data import load_tokenizer
from archlab.data.build import DataBundle, TokenSplit
from archlab.errors import ArchlabError
from archlab.evals import EvalContext
from archlab.evals.duo_predict import DuoPredictParams, duo_predict
from archlab.evals.loss import LossParams, heldout_loss
from archlab.models.gpt2_variants import GPT2VariantsConfig, GPT2VariantsForCausalLM


def _bundle(vocab: int) -> DataBundle:
    rows = list(torch.randint(0, vocab - 1, (6, 12), generator=torch.Generator().manual_seed(0)).unbind(0))
    split = TokenSplit(rows, rows)
    return DataBundle(tokenizer=load_tokenizer("bytes"), train=split, validation=split, test=split)


def test_real_stream_equals_the_plain_loss_and_fill_is_reported_apart(tmp_path):
    torch.manual_seed(0)
    model = GPT2VariantsForCausalLM(GPT2VariantsConfig(vocab_size=258, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                                       bos_token_id=None, eos_token_id=None, duo_predict=True)).eval()
    ctx = EvalContext(model, load_tokenizer("bytes"), _bundle(258), tmp_path, batch_size=4)
    duo = duo_predict(ctx, DuoPredictParams())
    plain = heldout_loss(ctx, LossParams())
    assert duo.metrics["next_token_loss"] == pytest.approx(plain.metrics["loss"], rel=1e-5)
    assert duo.metrics["next_token_accuracy"] == pytest.approx(plain.metrics["accuracy"])
    assert duo.n == 6 * 11 and duo.details["fill_tokens"] == 6 * 11
    assert set(duo.ci95) == {"next_token_loss", "next_token_accuracy", "fill_loss", "fill_accuracy"}
    assert duo.metrics["fill_loss"] != pytest.approx(duo.metrics["next_token_loss"])


def test_other_models_are_refused_in_one_line(tmp_path):
    ctx = EvalContext(torch.nn.Linear(1, 1), load_tokenizer("bytes"), _bundle(258), tmp_path)
    with pytest.raises(ArchlabError, match="archlab_gpt2"):
        duo_predict(ctx, DuoPredictParams())


def test_report_views_show_both_duo_streams_and_the_best_step(tmp_path):
    from archlab.plan.expand import RunSpec
    from archlab.report.collect import RunRow
    from archlab.report.eval_views import eval_views

    duo = {"metrics": {"next_token_loss": 5.0, "next_token_accuracy": 0.2, "fill_loss": 4.0, "fill_accuracy": 0.3},
           "ci95": {"fill_accuracy": [0.25, 0.35]}, "n": 100, "details": {"fill_tokens": 100}}
    row = RunRow(spec=RunSpec(id="duo", labels={"variant": "duo"}, config=None), status="done", message="",
                 evals={"duo_predict": duo}, best={"best_step": 500, "best_metric": 3.21, "step": 1500})
    sections = {title: table for title, table, _ in eval_views([row], tmp_path)}
    duo_table = sections["Duo-Predict: next-token (real stream) and fill-the-gap (mask slots)"]
    assert "0.300 [0.25, 0.35]" in duo_table and "5" in duo_table
    best = sections["Best checkpoint (load_best_model_at_end)"]
    assert "| 500 | 1500 | 3.21 |" in best
