"""match: params resizes a variant's width or depth to the baseline's parameter count at plan time."""

from __future__ import annotations

import pytest
import yaml

from archlab.errors import ArchlabError
from archlab.plan import expand, load_plan
from archlab.plan.match import MatchConfig, _count


def _plan(tmp_path, axes_extra: dict) -> list:
    plan = {
        "name": "matched",
        "defaults": {"model": {"config": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                                          "max_position_embeddings": 64}},
                     "data": {"source": "embedded:shakespeare", "tokenizer": "bytes"}},
        "axes": {"arch": {"base": {}, **axes_extra}},
        "matrix": {"arch": ["base", *axes_extra]},
        "baseline": {"arch": "base"},
    }
    path = tmp_path / "matched.yaml"
    path.write_text(yaml.safe_dump(plan))
    return expand(load_plan(path))


def test_a_deeper_variant_gets_the_width_that_matches_the_baseline_count(tmp_path):
    base, deep, wide = _plan(tmp_path, {
        "deep": {"model.config.num_hidden_layers": 4, "match": {"params": "baseline", "multiple_of": 4}},
        "wide_shallow": {"model.config.hidden_size": 160, "match": {"by": "model.config.num_hidden_layers",
                                                                     "tolerance": 0.5}}})
    target = _count(base.config, 259)
    deep_count = _count(deep.config, 259)
    assert deep.config.model.config["hidden_size"] < 128 and deep.config.model.config["hidden_size"] % 4 == 0
    assert abs(deep_count - target) / target <= 0.02
    assert deep.config.model.config["num_hidden_layers"] == 4 and deep.config.match.by == "model.config.hidden_size"
    assert MatchConfig.parse("params", where="t").by == "model.config.hidden_size"  # the shorthand
    assert wide.config.model.config["num_hidden_layers"] == 1  # depth is what it may change
    assert deep.id.startswith("deep-") and deep.id != _plan(tmp_path, {"deep": {"model.config.num_hidden_layers": 4}})[1].id


def test_a_count_out_of_reach_is_one_line_naming_the_nearest(tmp_path):
    with pytest.raises(ArchlabError, match=r"run 'deep_narrow': match: the nearest model.config.num_hidden_layers is "):
        _plan(tmp_path, {"deep_narrow": {"model.config.hidden_size": 512,
                                         "match": {"by": "model.config.num_hidden_layers"}}})


def test_keys_added_later_at_their_defaults_keep_the_run_ids():
    from archlab.plan import RunConfig
    from archlab.plan.expand import id_view
    from archlab.train.config import NOT_IN_RUN_ID

    data = RunConfig().to_dict()
    view = id_view(data)
    assert "match" not in view and not set(NOT_IN_RUN_ID) & set(view["train"])
    data["train"]["load_best_model_at_end"] = True
    assert id_view(data)["train"]["load_best_model_at_end"] is True  # a changed value is part of the id


def test_non_embedding_matching_counts_each_run_with_its_own_tokenizer(tmp_path):
    """A BPE variant of a byte-level baseline: its embedding table counts in a total match (so it gets narrower),
    not in a non-embedding one (there it gets the byte variant's width)."""
    def width(tokenizer: str, count: str) -> int:
        variant = {"model.config.num_hidden_layers": 3, "data.tokenizer": tokenizer,
                   "match": {"count": count, "multiple_of": 4, "tolerance": 0.05}}
        return _plan(tmp_path, {"variant": variant})[1].config.model.config["hidden_size"]

    assert width("embedded", "non_embedding") == width("bytes", "non_embedding")
    assert width("embedded", "total") < width("bytes", "total")
