"""mc: equal to lm-eval's own acc/acc_norm on the same model and task; cached = full; offline errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch.nn.functional as F
from tests.evals.conftest import MemorizingFake, tiny_model

from archlab.errors import ArchlabError
from archlab.evals.lib import mc_tasks
from archlab.evals.lib.mc_tasks import load_task
from archlab.evals.lib.texts import read_eval_set
from archlab.evals.mc import MCParams, multiple_choice

CLOZE = {"items": 8, "choices": 4, "context_sentences": 2}


def _write_task(tmp_path, records):
    data = tmp_path / "task.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    yaml = tmp_path / "archlab_tiny_mc.yaml"
    yaml.write_text(
        "task: archlab_tiny_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{gold}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    return data, yaml


@pytest.fixture(scope="module")
def mmlu_records():
    # trailing-space contexts and uneven choice lengths exercise lm-eval's pair split and acc_norm
    records = [{k: r[k] for k in ("context", "choices", "gold")} for r in read_eval_set("mmlu", "dev")[:24]]
    records[0]["context"] += " "
    return records


def test_acc_and_acc_norm_equal_lm_eval(tmp_path, bpe_tok, make_ctx, mmlu_records):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    data, yaml = _write_task(tmp_path, mmlu_records)
    model = tiny_model(len(bpe_tok), max_position_embeddings=512)
    ours_jsonl = multiple_choice(make_ctx(model, bpe_tok), MCParams(task=str(data)))
    ours_yaml = multiple_choice(make_ctx(model, bpe_tok), MCParams(task=str(yaml)))
    lm = HFLM(pretrained=model, tokenizer=bpe_tok, batch_size=8, max_length=512)
    out = lm_eval.simple_evaluate(model=lm, tasks=["archlab_tiny_mc"], log_samples=True,
                                  task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
    theirs = out["results"]["archlab_tiny_mc"]
    samples = sorted(out["samples"]["archlab_tiny_mc"], key=lambda s: s["doc_id"])
    for ours in (ours_jsonl, ours_yaml):
        assert ours.metrics["acc"] == pytest.approx(theirs["acc,none"], abs=1e-12)
        assert ours.metrics["acc_norm"] == pytest.approx(theirs["acc_norm,none"], abs=1e-12)
        for item, sample in zip(ours.items, samples, strict=True):
            lls = [r[0] for r in sample["filtered_resps"]]
            np.testing.assert_allclose(item["lls"], lls, atol=2e-4)
            assert item["acc"] == sample["acc"] and item["acc_norm"] == sample["acc_norm"]
    assert ours_jsonl.n == 24 and 0 <= ours_jsonl.ci95["acc"][0] <= ours_jsonl.metrics["acc"]


def _fewshot_subject_task(tmp_path, subject, records) -> str:
    """An lm-eval task per subject, as lm-eval's MMLU: header as description, first_n shots from the same split."""
    data = tmp_path / f"{subject}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    name = f"archlab_fewshot_{subject}"
    (tmp_path / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        f"test_split: test\nfewshot_split: test\nfewshot_config:\n  sampler: first_n\n"
        f"description: {json.dumps(records[0]['description'])}\noutput_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{gold}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    return name


@pytest.mark.slow  # runs lm-eval end to end: CI runs it with the slow suite
def test_few_shot_prompts_and_scores_equal_lm_eval(tmp_path, bpe_tok, make_ctx):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    subjects = ("anatomy", "astronomy")
    records = [r for r in read_eval_set("mmlu", "dev") if r["subject"] in subjects]
    ours_file = tmp_path / "both.jsonl"
    ours_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    model = tiny_model(len(bpe_tok), max_position_embeddings=1024)
    ours = multiple_choice(make_ctx(model, bpe_tok), MCParams(task=str(ours_file), num_fewshot=2))
    docs = load_task(str(ours_file), limit=None, num_fewshot=2, delimiter=" ", seed=0, cloze=CLOZE).docs
    names = [_fewshot_subject_task(tmp_path, s, [r for r in records if r["subject"] == s]) for s in subjects]
    out = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=bpe_tok, batch_size=8, max_length=1024),
                                  tasks=names, num_fewshot=2, log_samples=True,
                                  task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
    theirs = [s for name in names for s in sorted(out["samples"][name], key=lambda s: s["doc_id"])]
    assert len(theirs) == len(records) == len(ours.items)
    for doc, item, sample in zip(docs, ours.items, theirs, strict=True):
        assert [list(r) for r in doc.requests] == [list(a) for a in sample["arguments"]]  # the same prompts
        np.testing.assert_allclose(item["lls"], [r[0] for r in sample["filtered_resps"]], atol=2e-4)
        assert item["acc"] == sample["acc"] and item["acc_norm"] == sample["acc_norm"]


def test_cached_scoring_equals_full_rows(bpe_tok, make_ctx):
    model = tiny_model(len(bpe_tok))
    ctx = make_ctx(model, bpe_tok)
    cached = multiple_choice(ctx, MCParams(task="mmlu_dev", limit=12))
    full = multiple_choice(ctx, MCParams(task="mmlu_dev", limit=12, scoring="full"))
    for a, b in zip(cached.items, full.items, strict=True):
        np.testing.assert_allclose(a["lls"], b["lls"], atol=1e-4)
    assert cached.metrics["acc"] == full.metrics["acc"] and cached.metrics["acc_norm"] == full.metrics["acc_norm"]


def test_acc_norm_divides_by_characters(byte_tok, make_ctx, tmp_path):
    # uniform model: ll = -(bytes) * log(258); acc picks the shortest choice, acc_norm ties -> first index
    model = MemorizingFake(len(byte_tok))
    data, _ = _write_task(tmp_path, [{"context": "Q", "choices": ["aaaa", "b", "cc"], "gold": 1},
                                     {"context": "Q", "choices": ["aaaa", "b", "cc"], "gold": 0}])
    result = multiple_choice(make_ctx(model, byte_tok), MCParams(task=str(data)))
    assert [i["pred"] for i in result.items] == [1, 1]
    assert result.metrics["acc"] == 0.5 and result.metrics["acc_norm"] == 0.5
    assert result.items[1]["acc_norm"] == 1.0  # per-char ll equal for all -> argmax is index 0


def test_memorize_sees_contexts_only(byte_tok, make_ctx, tmp_path):
    model = MemorizingFake(len(byte_tok))
    records = [{"context": "The sky is", "choices": ["BLUE", "GREEN"], "gold": 0},
               {"context": "Grass is", "choices": ["GREEN", "RED"], "gold": 0}]
    data, _ = _write_task(tmp_path, records)
    result = multiple_choice(make_ctx(model, byte_tok), MCParams(task=str(data), memorize=True))
    seen = bytes(b for call in model.memorized for b in call).decode()
    assert model.memorized and not any(c.isupper() and c not in "TG" for c in seen)
    assert {"acc", "acc_memorize", "acc_norm_memorize"} <= set(result.metrics)


def test_mmlu_dev_and_cloze_tasks_load():
    mmlu = load_task("mmlu_dev", limit=None, num_fewshot=0, delimiter=" ", seed=0, cloze=CLOZE)
    assert len(mmlu.docs) == 282 and all(0 <= d.gold < len(d.choices) for d in mmlu.docs)
    cloze = load_task("cloze:wiki", limit=None, num_fewshot=0, delimiter=" ", seed=0, cloze=CLOZE)
    assert len(cloze.docs) == 8
    golds = {d.gold for d in cloze.docs}
    assert len(golds) > 1  # the true sentence is not always first
    shots = load_task("mmlu_dev", limit=2, num_fewshot=2, delimiter=" ", seed=0, cloze=CLOZE)
    prompt = shots.docs[0].requests[0][0]
    assert prompt.count("Question:") == 3 and prompt.count("The following are questions") == 1
    assert prompt.startswith(mmlu.docs[0].raw["description"])


def test_named_hub_task_offline_fails_with_one_line(monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setattr(mc_tasks, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(ArchlabError) as err:
        load_task("piqa", limit=4, num_fewshot=0, delimiter=" ", seed=0, cloze=CLOZE)
    assert "\n" not in str(err.value) and "piqa" in str(err.value)
    assert time.perf_counter() - start < 30


def test_archlab_plan_refuses_an_unreachable_hub_task_before_training(monkeypatch, capsys, tmp_path, corpus_dir):
    """What failed after training (the task loads when the eval runs) is now one line from `archlab plan`."""
    from tests.test_cli import cli, tiny_plan

    monkeypatch.setattr(mc_tasks, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    for task, message in (("mmlu_dvv", "mc task 'mmlu_dvv' (did you mean 'mmlu_dev'?) is not embedded"),
                          ("piqa", "mc task 'piqa' is not embedded (mmlu_dev, cloze) or a file, and as an lm-eval "
                                   "task it needs its dataset from the Hugging Face hub, which is not reachable")):
        plan = tiny_plan(tmp_path, corpus_dir, metrics=["mc.acc"], headline="mc.acc")
        data = __import__("yaml").safe_load(plan.read_text())
        data["defaults"]["eval"] = [{"name": "mc", "tasks": ["mmlu_dev", task], "limit": 2}]
        plan.write_text(__import__("yaml").safe_dump(data))
        code, out = cli(monkeypatch, capsys, "plan", str(plan), "--runs-dir", str(tmp_path / "runs"))
        assert code == 2 and message in out and "Traceback" not in out, out
    MCParams(tasks=["mmlu_dev", "cloze:code"]).check_before_training()  # embedded tasks pass, offline too


class PaddingBlind(MemorizingFake):
    """Accepts a mask and positions but lets padding change its logits (a recurrent mixer could)."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None, **kwargs):
        from transformers.modeling_outputs import CausalLMOutputWithPast

        counts = F.one_hot(input_ids, self.vocab).float().cumsum(1)
        return CausalLMOutputWithPast(logits=counts)


def test_models_that_read_padding_are_scored_one_question_at_a_time(byte_tok, make_ctx, tmp_path):
    records = [{"context": "x" * n, "choices": ["a", "b", "x"], "gold": 2} for n in (1, 5, 9)]
    data, _ = _write_task(tmp_path, records)
    ctx = make_ctx(PaddingBlind(len(byte_tok)), byte_tok)
    cached = multiple_choice(ctx, MCParams(task=str(data), target_delimiter=""))
    full = multiple_choice(ctx, MCParams(task=str(data), target_delimiter="", scoring="full"))
    assert [i["lls"] for i in cached.items] == [i["lls"] for i in full.items]


def test_several_tasks_in_one_eval_report_each_task_and_their_mean(bpe_tok, make_ctx):
    from archlab.evals.lib.views import EvalRun
    from archlab.evals.mc import mc_view
    ctx = make_ctx(tiny_model(len(bpe_tok)), bpe_tok)
    cloze = dict(cloze_items=6)
    both = multiple_choice(ctx, MCParams(tasks=["mmlu_dev", "cloze"], limit=6, **cloze))
    alone = {t: multiple_choice(ctx, MCParams(task=t, limit=6, **cloze)) for t in ("mmlu_dev", "cloze")}
    for t, r in alone.items():  # each task scored exactly as on its own
        assert both.metrics[f"acc@{t}"] == r.metrics["acc"] and both.metrics[f"acc_norm@{t}"] == r.metrics["acc_norm"]
        assert both.ci95[f"acc_norm@{t}"] == r.ci95["acc_norm"]
    assert both.metrics["acc_norm"] == pytest.approx(np.mean([r.metrics["acc_norm"] for r in alone.values()]))
    assert both.n == 12 and {i["task"] for i in both.items} == {"mmlu_dev", "cloze"}
    payload = {"metrics": both.metrics, "ci95": both.ci95, "n": both.n, "details": both.details}
    view = mc_view([EvalRun("r1", "hope", payload)], None)
    header = view.table[0]
    assert "mmlu_dev acc_norm" in header and "cloze acc_norm" in header
    with pytest.raises(ValueError, match="either task"):
        MCParams(task="mmlu_dev", tasks=["cloze"])
