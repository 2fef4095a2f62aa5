from __future__ import annotations

import pytest

from archlab.config import config_hash, deep_merge, parse_overrides
from archlab.errors import ArchlabError
from archlab.plan import RunConfig
from archlab.registry import Registry


def test_unknown_key_names_it_and_suggests_the_closest():
    with pytest.raises(ArchlabError, match=r"unknown key 'train.learnig_rate' \(did you mean 'learning_rate'\?\)"):
        RunConfig.parse({"train": {"learnig_rate": 1e-3}})


def test_wrong_type_names_key_and_value():
    with pytest.raises(ArchlabError, match=r"'train.max_steps'.*got 'many'"):
        RunConfig.parse({"train": {"max_steps": "many"}})


def test_a_wrong_value_of_a_union_field_is_one_problem_listing_the_choices():
    with pytest.raises(ArchlabError) as info:
        RunConfig.parse({"train": {"bf16": "sometimes"}})
    assert str(info.value) == "'train.bf16': input should be a valid boolean or 'auto' (got 'sometimes')"
    with pytest.raises(ArchlabError) as info:  # two fields wrong: two problems, not one union
        RunConfig.parse({"train": {"max_steps": "x", "seed": "x"}})
    assert "'train.max_steps'" in str(info.value) and "(and 1 more problem(s))" in str(info.value)


def test_overrides_parse_yaml_scalars_and_nest():
    out = parse_overrides(["train.learning_rate=3e-4", "model.config.num_hidden_layers=4", "data.source=embedded:wiki",
                           "train.report_to=[wandb]"])
    assert out == {"train": {"learning_rate": 3e-4, "report_to": ["wandb"]},
                   "model": {"config": {"num_hidden_layers": 4}}, "data": {"source": "embedded:wiki"}}


def test_override_without_equals_is_one_clear_error():
    with pytest.raises(ArchlabError, match="is not key=value"):
        parse_overrides(["train.learning_rate"])


def test_deep_merge_and_hash_are_order_independent():
    a = deep_merge({"x": {"a": 1, "b": 2}}, {"x": {"b": 3}})
    assert a == {"x": {"a": 1, "b": 3}}
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})


def test_registry_did_you_mean():
    reg: Registry[int] = Registry("thing")
    reg.register("attention", 1)
    with pytest.raises(ArchlabError, match=r"unknown thing 'atention' \(did you mean 'attention'\?\)"):
        reg.get("atention")


def test_registry_lazy_entry_imports_on_first_get():
    reg: Registry[object] = Registry("thing")
    reg.register("dumps", "json:dumps")
    import json

    assert reg.get("dumps") is json.dumps


def test_run_config_round_trips_through_yaml():
    import yaml

    cfg = RunConfig.parse({"train": {"max_steps": 5, "schedules": {"mag_weight": {"type": "constant", "value": 0.5}}}})
    again = RunConfig.parse(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg


def test_ratio_interval_matches_a_normal_mean_interval_for_equal_denominators():
    import math

    from archlab.evals.lib.stats import ratio_interval, wilson_interval

    values = [1.0, 2.0, 3.0, 4.0]
    lo, hi = ratio_interval(values, [1.0] * 4)
    sd = math.sqrt(sum((v - 2.5) ** 2 for v in values) / 3)
    assert math.isclose(hi - 2.5, 1.959963984540054 * sd / 2, rel_tol=1e-12) and math.isclose(lo + hi, 5.0)
    lo, hi = wilson_interval(8, 10)
    assert math.isclose(lo, 0.4901625, rel_tol=1e-5) and math.isclose(hi, 0.9433178, rel_tol=1e-5)


def test_wilson_interval_is_exact_at_the_edges():
    from archlab.evals.lib.stats import wilson_interval

    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == 1.0
