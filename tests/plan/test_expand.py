from __future__ import annotations

import pytest

from archlab.errors import ArchlabError
from archlab.plan import PlanConfig, expand, find_baseline, load_plan

PLAN = {
    "name": "t",
    "defaults": {"train": {"max_steps": 10}},
    "axes": {
        "operator": {"delta_rule": {"train.learning_rate": 1e-3}, "delta_product": {"train.learning_rate": 2e-3}},
        "size": {"small": {"model.config.hidden_size": 32}, "big": {"model.config.hidden_size": 64}},
    },
    "matrix": {"operator": ["delta_rule", "delta_product"], "size": ["small", "big"]},
    "rules": [{"when": {"operator": "delta_product"}, "set": {"data.block_size": 32}}],
    "baseline": {"operator": "delta_rule", "size": "small"},
}


def test_matrix_is_a_cross_product_with_rules_applied():
    specs = expand(PlanConfig.parse(PLAN))
    assert [s.labels for s in specs] == [
        {"operator": "delta_rule", "size": "small"}, {"operator": "delta_rule", "size": "big"},
        {"operator": "delta_product", "size": "small"}, {"operator": "delta_product", "size": "big"},
    ]
    assert [s.config.data.block_size for s in specs] == [256, 256, 32, 32]
    assert specs[2].config.train.learning_rate == 2e-3


def test_ids_are_readable_stable_and_change_with_the_config():
    a = expand(PlanConfig.parse(PLAN))
    b = expand(PlanConfig.parse(PLAN))
    assert [s.id for s in a] == [s.id for s in b]
    assert a[0].id.startswith("delta_rule-small-")
    edited = {**PLAN, "defaults": {"train": {"max_steps": 11}}}
    c = expand(PlanConfig.parse(edited))
    assert all(x.id != y.id for x, y in zip(a, c, strict=True))


def test_identical_configs_are_one_run_listed_in_both_sections():
    plan = {**PLAN, "section": "core", "include": [{"section": "sweep", "set": {"operator": "delta_rule", "size": "small"}}]}
    specs = expand(PlanConfig.parse(plan))
    assert len(specs) == 4
    assert specs[0].sections == ["core", "sweep"]


def test_profiles_swap_settings_and_axis_contents():
    plan = {**PLAN, "profiles": {"smoke": {"set": {"train.max_steps": 2},
                                           "axes": {"size": {"big": {"model.config.hidden_size": 48}}}}}}
    specs = expand(PlanConfig.parse(plan), profile="smoke")
    assert {s.config.train.max_steps for s in specs} == {2}
    assert specs[1].config.model.config["hidden_size"] == 48
    with pytest.raises(ArchlabError, match="unknown profile 'smok' .*did you mean 'smoke'"):
        expand(PlanConfig.parse(plan), profile="smok")


def test_rules_can_match_on_profile_and_dotted_keys():
    plan = {**PLAN, "profiles": {"smoke": {}},
            "rules": [{"when": {"profile": "smoke", "model.config.hidden_size": 64}, "set": {"train.seed": 7}}]}
    specs = expand(PlanConfig.parse(plan), profile="smoke")
    assert [s.config.train.seed for s in specs] == [42, 7, 42, 7]


def test_baseline_is_found_by_labels():
    specs = expand(PlanConfig.parse(PLAN))
    assert find_baseline(PlanConfig.parse(PLAN), specs) is specs[0]
    bad = {**PLAN, "baseline": {"operator": "nope"}}
    with pytest.raises(ArchlabError, match="baseline .* matches no run"):
        find_baseline(PlanConfig.parse(bad), specs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"matrix": {}}, "has no runs: its matrix is empty"),
        ({"matrix": {"operator": []}}, "must be a non-empty list"),
        ({"matrix": {"operater": ["delta_rule"]}}, "unknown axis or key 'operater' .*did you mean 'operator'"),
        ({"matrix": {"operator": ["delta_rul"]}}, "axis 'operator' has no label 'delta_rul' .*did you mean 'delta_rule'"),
        ({"defaults": {"train": {"max_step": 1}}}, "unknown key 'train.max_step' .*did you mean 'max_steps'"),
        ({"include": [{"name": "x", "set": {"operator": "delta_rule"}}, {"name": "x", "set": {"operator": "delta_product"}}]},
         "duplicate run name 'x'"),
    ],
)
def test_bad_plans_fail_with_one_clear_line(change, message):
    with pytest.raises(ArchlabError, match=message):
        expand(PlanConfig.parse({**PLAN, **change}))


def test_unknown_top_level_plan_key():
    with pytest.raises(ArchlabError, match="unknown key 'matrx' .*did you mean 'matrix'"):
        PlanConfig.parse({**PLAN, "matrx": {}})


def test_every_shipped_plan_parses_and_expands():
    from pathlib import Path

    plans = sorted(Path(__file__).resolve().parents[2].joinpath("plans").glob("*.yaml"))
    assert plans
    for path in plans:
        plan = load_plan(path)
        for profile in [None, *plan.profiles]:
            assert expand(plan, profile), path


def test_every_shipped_run_config_parses():
    from pathlib import Path

    from archlab.config import load_yaml
    from archlab.plan import RunConfig

    configs = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.yaml"))
    assert configs
    for path in configs:
        assert RunConfig.parse(load_yaml(path), where=str(path)).train.max_steps > 0
