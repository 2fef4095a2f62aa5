"""eval_views: real eval JSON from a plan-style eval list -> tables and the three plots."""

from __future__ import annotations

import json

from tests.evals.conftest import tiny_model

from archlab.evals import EvalSpec, run_eval
from archlab.plan.expand import RunSpec
from archlab.report.collect import RunRow
from archlab.report.eval_views import eval_views

PLAN_EVALS = [
    {"name": "niah", "lengths": [96, 128], "depths": [0, 0.5, 1.0], "n_per_cell": 1, "key_digits": 3},
    {"name": "passkey", "lengths": [128], "n_per_length": 2},
    {"name": "continual", "segments": ["wiki", "code"], "train_tokens": 16, "heldout_tokens": 32, "window": 16},
    {"name": "multilingual_bpb", "max_bytes": 100, "slices": ["quran_en", "quran_zh", "code"]},
    {"name": "mc", "task": "mmlu_dev", "limit": 4},
    {"name": "probes", "n_per_task": 1, "k_shot": 0, "tasks": ["addition"]},
    {"name": "compression", "max_bytes": 100},
    {"name": "long_ppl", "max_documents": 1, "max_tokens": 64, "window": 32},
]


def test_plan_eval_list_writes_json_and_the_report_renders_it(bpe_tok, make_ctx, tmp_path):
    ctx = make_ctx(tiny_model(len(bpe_tok)), bpe_tok)
    payloads = {}
    for entry in PLAN_EVALS:
        spec = EvalSpec.model_validate(entry)  # the plan's shorthand: name + params side by side
        payloads[spec.name] = run_eval(spec, ctx)
        saved = json.loads((ctx.run_dir / "eval" / f"{spec.name}.json").read_text())
        assert saved["n"] > 0 and saved["metrics"]
    assert (ctx.run_dir / "eval" / "niah.items.jsonl").exists()
    row = RunRow(spec=RunSpec(id="tiny", labels={"arch": "tiny"}, config=None), status="done", message="",
                 evals=payloads)
    sections = eval_views([row], tmp_path / "plots")
    titles = [t for t, _, _ in sections]
    assert "Needle in a haystack" in titles and "Continual learning (forgetting)" in titles
    images = [p for _, _, imgs in sections for p in imgs]
    assert {p.name for p in images} >= {"niah_tiny.png", "forgetting_tiny.png", "bpb_by_language.png"}
    assert all(p.stat().st_size > 1000 for p in images)
    markdown = dict((t, m) for t, m, _ in sections)
    assert "| tiny |" in markdown["Multiple choice (zero-shot)"] and "[" in markdown["Passkey retrieval"]


def test_a_new_eval_declares_its_view_beside_itself_and_the_report_shows_it(tmp_path):
    from archlab.evals import EVAL_VIEWS, EvalRun, View, eval_view
    from archlab.report import eval_views as report_views

    @eval_view("toy_eval_for_views", order=15)  # between masked_loss (10) and mc (20)
    def toy(runs: list[EvalRun], plots):
        return View("Toy", [["Variant", "score"], *[[r.title, str(r.metrics["score"])] for r in runs]], "a note")

    extra = lambda rows, plots: ("Extra", "| a |\n|---|\n| 1 |", [])  # noqa: E731  (the VIEWS hook)
    report_views.VIEWS.append(extra)
    try:
        rows = [RunRow(spec=RunSpec(id=f"r{i}", labels={}, config=None), status="done", message="",
                       evals={"toy_eval_for_views": {"metrics": {"score": i}, "n": 1}} if i else {}) for i in range(3)]
        rows[0].evals["mc"] = json.loads(json.dumps({"metrics": {"acc": 0.5, "acc_norm": 0.25}, "n": 4,
                                                     "ci95": {}, "details": {"task": "t", "chance": 0.25}}))
        sections = report_views.eval_views(rows, tmp_path)
    finally:
        report_views.VIEWS.remove(extra)
        EVAL_VIEWS._entries.pop("toy_eval_for_views")
    assert [t for t, _, _ in sections] == ["Toy", "Multiple choice (zero-shot)", "Extra"]
    toy_md = sections[0][1]
    assert "| r1 | 1 |" in toy_md and "| r2 | 2 |" in toy_md and "r0" not in toy_md and toy_md.endswith("a note")


def test_eval_modules_are_named_after_what_they_register():
    import pkgutil

    import archlab.evals as evals
    from archlab.evals import EVALS

    modules = {m.name for m in pkgutil.iter_modules(evals.__path__)} - {"base", "lib"}
    registered = {name: EVALS.get(name).fn.__module__.rpartition(".")[2] for name in EVALS}
    assert all(name == module for name, module in registered.items()), registered
    assert modules == set(registered), modules ^ set(registered)  # helpers live in evals/lib
