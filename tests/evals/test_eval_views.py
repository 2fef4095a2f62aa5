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
