"""The cached scorers give a grafted model's full-forward numbers: its memory state travels with the cache.

Every scorer of the eval suite (mc's batched contexts, niah / passkey distractor ranking, greedy answers of
niah / passkey / probes) copies, batch-expands or selects rows of a cache. Before the memory state lived in
the cache, the copies had none (0.14 nats off, or a shape error in mc).
"""

from __future__ import annotations

import pytest
import torch
from tests.graft.conftest import VOCAB, set_mag_weight, tiny_model

from archlab.evals import EvalContext, EvalSpec, run_eval
from archlab.evals.lib.loglik import PrefixState, score_contexts_batched, score_full
from archlab.graft import GraftConfig, apply_graft
from archlab.nn.memory import OPERATORS

FAMILIES = ["llama", "qwen2", "mistral", "phi3", "gpt2"]
CASES = [(f, op) for f in FAMILIES for op in OPERATORS.names()]
TOL = 1e-5  # nats


def grafted(family: str, operator: str):
    model = apply_graft(tiny_model(family), GraftConfig(operator=operator, chunk_size=4))
    set_mag_weight(model, 0.5)
    return model.eval()


def ids(n: int, seed: int) -> list[int]:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


GROUPS = [(ids(9, 1), [ids(3, 2), ids(1, 3), ids(5, 4)]), (ids(14, 5), [ids(2, 6), ids(4, 7)]),
          (ids(6, 8), [ids(6, 9), ids(3, 10)])]


def reference(model, groups):
    return [[s.ll for s in score_full(model, [(ctx, c) for c in conts])] for ctx, conts in groups]


@pytest.mark.parametrize(("family", "operator"), CASES)
def test_prefix_state_and_batched_contexts_score_like_the_full_forward(family, operator):
    model = grafted(family, operator)
    want = reference(model, GROUPS)
    one_at_a_time = [[s.ll for s in PrefixState(model, ctx).score(conts)] for ctx, conts in GROUPS]
    batched = [[s.ll for s in row] for row in score_contexts_batched(model, GROUPS)]  # left-padded contexts
    for got in (one_at_a_time, batched):
        for g_row, w_row in zip(got, want, strict=True):
            assert max(abs(g - w) for g, w in zip(g_row, w_row, strict=True)) < TOL


@pytest.mark.parametrize(("family", "operator"), CASES)
def test_greedy_answers_equal_the_argmax_of_full_forwards(family, operator):
    model = grafted(family, operator)
    context = ids(11, 12)
    got = PrefixState(model, context).greedy(7)
    want, row = [], list(context)
    with torch.no_grad():
        for _ in range(7):
            token = int(model(torch.tensor([row])).logits[0, -1].argmax())
            want.append(token)
            row.append(token)
    assert got == want


@pytest.mark.parametrize(("family", "operator"), CASES)
def test_beam_search_with_the_cache_equals_beam_search_without(family, operator):
    model = grafted(family, operator)
    prompt = torch.tensor([ids(7, 13), ids(7, 14)])
    kw = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=5, num_beams=3, do_sample=False,
              pad_token_id=0)
    with torch.no_grad():
        assert torch.equal(model.generate(prompt, **kw), model.generate(prompt, use_cache=False, **kw))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_mc_default_scoring_on_mmlu_equals_full_scoring(family, tmp_path):
    from tests.graft.conftest import FAMILY_CONFIGS

    from archlab.data import load_tokenizer

    tok = load_tokenizer("bytes")
    options = dict(FAMILY_CONFIGS[family])
    options["vocab_size"] = len(tok)
    torch.manual_seed(0)
    from transformers import AutoConfig, AutoModelForCausalLM

    base = AutoModelForCausalLM.from_config(AutoConfig.for_model(options.pop("model_type"), **options)).eval()
    model = apply_graft(base, GraftConfig(operator="delta_product", chunk_size=4)).eval()
    results = {}
    for scoring in ("cached", "full"):
        ctx = EvalContext(model, tok, None, tmp_path / scoring)
        run_eval(EvalSpec(name="mc", params={"task": "mmlu_dev", "limit": 8, "scoring": scoring}), ctx)
        results[scoring] = [r for r in _items(tmp_path / scoring)]
    for a, b in zip(results["cached"], results["full"], strict=True):
        assert max(abs(x - y) for x, y in zip(a["lls"], b["lls"], strict=True)) < 1e-4
        assert a["acc"] == b["acc"]


def _items(run_dir):
    import json

    return [json.loads(line) for line in (run_dir / "eval" / "mc.items.jsonl").read_text().splitlines()]
