"""Run dependencies: a block's ``needs`` gives a config key the exported model of another run of the plan.

The needed run goes first, its id is part of the dependent's config (so the dependent's id changes with it),
and a dependent whose dependency did not finish fails with one line naming it.
"""

from __future__ import annotations

import pytest
from tests.conftest import tiny_run_config

from archlab.errors import ArchlabError
from archlab.models import ARCHITECTURES
from archlab.plan import PlanConfig, RunStore, expand
from archlab.plan.executor import dependencies_first, run_local

KEY = "model.config.entropy_model_path"


def _plan(corpus_dir, entropy_steps=2, **latent_train):
    latent = ARCHITECTURES.get("byte_latent").tiny_config
    latent = {k: v for k, v in latent.items() if k not in ("entropy_config", "eos_token_id")}
    defaults = tiny_run_config(corpus_dir, max_steps=2)
    entropy_model = defaults.pop("model")
    return {
        "name": "needs",
        "defaults": defaults,
        "include": [
            {"section": "phase 2", "needs": {KEY: "entropy"},
             "set": {"model.arch": "byte_latent", "model.config": latent, **latent_train}},
            {"section": "phase 1", "name": "entropy", "set": {"train.max_steps": entropy_steps, "model": entropy_model}},
        ],
    }


def test_the_needed_run_is_expanded_first_and_its_id_is_part_of_the_dependents_config(corpus_dir):
    entropy, latent = expand(PlanConfig.parse(_plan(corpus_dir)))
    assert entropy.name == "entropy" and latent.config.needs == {KEY: entropy.id}
    entropy2, latent2 = expand(PlanConfig.parse(_plan(corpus_dir, entropy_steps=3)))
    assert entropy2.id != entropy.id and latent2.id != latent.id  # a changed dependency re-runs its dependents
    assert "needs" not in entropy.config.to_dict()  # runs without dependencies keep their ids


def test_unknown_names_and_cycles_are_one_line_errors(corpus_dir):
    plan = _plan(corpus_dir)
    plan["include"][0]["needs"] = {KEY: "entropi"}
    with pytest.raises(ArchlabError, match="no block has that name.*did you mean 'entropy'"):
        expand(PlanConfig.parse(plan))
    plan = _plan(corpus_dir)
    plan["include"][0]["name"] = "latent"
    plan["include"][1]["needs"] = {KEY: "latent"}
    with pytest.raises(ArchlabError, match="cycle"):
        expand(PlanConfig.parse(plan))


def test_the_executor_orders_dependencies_first_whatever_the_given_order(corpus_dir):
    entropy, latent = expand(PlanConfig.parse(_plan(corpus_dir)))
    assert [s.id for s in dependencies_first([latent, entropy])] == [entropy.id, latent.id]


def test_a_dependent_of_a_failed_run_fails_with_one_line(tmp_path, corpus_dir):
    plan = _plan(corpus_dir)
    plan["include"][1]["set"]["data.source"] = str(tmp_path / "missing")
    entropy, latent = expand(PlanConfig.parse(plan))
    outcomes = run_local([latent, entropy], RunStore(tmp_path / "runs", "needs"))
    assert [o.run_id for o in outcomes] == [entropy.id, latent.id]
    assert outcomes[0].status == "failed"
    assert outcomes[1].status == "failed"
    assert outcomes[1].message.startswith(f"needs run {entropy.id} (for {KEY}), which is failed: ")
    assert "\n" not in outcomes[1].message


@pytest.mark.slow
def test_the_dependent_trains_on_the_model_its_dependency_exported(tmp_path, corpus_dir):
    from transformers import AutoModelForCausalLM

    entropy, latent = expand(PlanConfig.parse(_plan(corpus_dir)))
    store = RunStore(tmp_path / "runs", "needs")
    outcomes = run_local([latent, entropy], store)
    assert [o.status for o in outcomes] == ["done", "done"], outcomes
    trained = AutoModelForCausalLM.from_pretrained(store.run(entropy.id).model_dir)
    latent_model = AutoModelForCausalLM.from_pretrained(store.run(latent.id).model_dir)
    for name, p in trained.state_dict().items():
        assert p.equal(latent_model.entropy_model.state_dict()[name]), name


def test_archlab_plan_refuses_a_needs_key_the_architecture_lacks(corpus_dir):
    from archlab.plan.validate import validate_plan

    plan = _plan(corpus_dir)
    plan["include"][0]["needs"] = {"model.config.entropy_model_pth": "entropy"}
    parsed = PlanConfig.parse(plan)
    with pytest.raises(ArchlabError, match="needs key 'model.config.entropy_model_pth'.*did you mean 'entropy_model_path'"):
        validate_plan(parsed, expand(parsed))


def test_the_gate_waits_for_needed_runs_and_fails_a_dependent_of_a_failed_one(corpus_dir):
    from archlab.plan.deps import READY, WAIT, gate
    from archlab.plan.runner import Outcome

    entropy, latent = expand(PlanConfig.parse(_plan(corpus_dir)))
    ids = {entropy.id, latent.id}
    assert gate(entropy, {}, ids) == READY
    assert gate(latent, {}, ids) == WAIT
    assert gate(latent, {entropy.id: Outcome(entropy.id, "done")}, ids) == READY
    failed = gate(latent, {entropy.id: Outcome(entropy.id, "diverged", "nan")}, ids)
    assert failed.status == "failed" and failed.message.startswith(f"not started: needs run {entropy.id}")
    assert gate(latent, {}, {latent.id}) == READY  # filtered out (--only): the runner checks its folder


@pytest.mark.slow  # two worker processes
def test_the_pool_starts_a_dependent_only_after_its_dependency(tmp_path, corpus_dir):
    from archlab.plan.pool import run_pool

    entropy, latent = expand(PlanConfig.parse(_plan(corpus_dir)))
    store = RunStore(tmp_path / "runs", "needs")
    # two free workers: without the gate the dependent would start at once and fail (its dependency running)
    outcomes = run_pool([latent, entropy], store, workers=2)
    assert [o.status for o in outcomes] == ["done", "done"], outcomes

    plan = _plan(corpus_dir)
    plan["include"][1]["set"]["data.source"] = str(tmp_path / "missing")
    entropy, latent = expand(PlanConfig.parse(plan))
    outcomes = run_pool([latent, entropy], store, workers=2)
    assert outcomes[1].status == "failed"
    assert outcomes[0].message.startswith(f"not started: needs run {entropy.id} (for {KEY}), which is failed")
    assert not store.run(latent.id).path.exists()  # never started


@pytest.mark.slow  # a local Ray cluster
def test_ray_submits_a_dependent_only_after_its_dependency(tmp_path, corpus_dir):
    pytest.importorskip("ray")
    import ray

    from archlab.plan.executor import run_ray

    entropy, latent = expand(PlanConfig.parse(_plan(corpus_dir)))
    try:
        outcomes = run_ray([latent, entropy], RunStore(tmp_path / "runs", "needs"), num_cpus=1)
    finally:
        ray.shutdown()  # the executor started a local cluster; other tests start their own
    assert [o.status for o in outcomes] == ["done", "done"], outcomes
