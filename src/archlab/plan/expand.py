"""Plan -> the list of runs it means: deterministic, deduplicated, each with a readable, stable id.

A run id is the slug of its labels plus a short hash of its resolved config, so editing a plan gives the
changed runs new ids (old results stay) and re-running skips what is done.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from archlab.config import config_hash, deep_merge, expand_dotted, flatten, get_dotted
from archlab.errors import ArchlabError, did_you_mean
from archlab.files import slug as _slug
from archlab.plan.schema import Block, PlanConfig, RunConfig

DEFAULT_SECTION = "Runs"
DEFAULT_MAX_RUNS = 500  # a typo'd matrix of 10 axes x 10 values is 10^10 runs; say so before building them


@dataclass
class RunSpec:
    id: str
    labels: dict[str, str]
    config: RunConfig
    sections: list[str] = field(default_factory=list)
    name: str | None = None

    @property
    def title(self) -> str:
        return self.name or " · ".join(self.labels.values()) or self.id


def _label(value: Any) -> str:
    if isinstance(value, dict):
        return _slug("_".join(f"{k}{_label(v)}" for k, v in value.items()))
    if isinstance(value, list):
        return _slug("_".join(_label(v) for v in value))
    return _slug(str(value).lower() if isinstance(value, bool) else str(value))


class Expander:
    def __init__(self, plan: PlanConfig, profile: str | None, overrides: dict[str, Any]):
        self.plan = plan
        self.profile = profile if profile is not None else plan.default_profile
        axes = {k: dict(v) for k, v in plan.axes.items()}
        base = plan.defaults
        if self.profile is not None:
            if self.profile not in plan.profiles:
                raise ArchlabError(
                    f"unknown profile '{self.profile}'{did_you_mean(self.profile, plan.profiles)}; "
                    f"plan '{plan.name}' has: {', '.join(plan.profiles) or 'none'}"
                )
            prof = plan.profiles[self.profile]
            base = deep_merge(expand_dotted(base), expand_dotted(prof.set))
            for axis, labels in prof.axes.items():
                if axis not in axes:
                    raise ArchlabError(f"profile '{self.profile}' overrides unknown axis '{axis}'{did_you_mean(axis, axes)}")
                for label, patch in labels.items():
                    if label not in axes[axis]:
                        raise ArchlabError(f"profile '{self.profile}': axis '{axis}' has no label '{label}'"
                                           f"{did_you_mean(label, axes[axis])}")
                    axes[axis][label] = deep_merge(expand_dotted(axes[axis][label] or {}), expand_dotted(patch or {}))
        self.axes = axes
        self.base = deep_merge(expand_dotted(base), overrides)

    def _apply(self, key: str, value: Any, config: dict, labels: dict[str, str]) -> dict:
        if key in self.axes:
            label = str(value)
            if label not in self.axes[key]:
                raise ArchlabError(
                    f"axis '{key}' has no label '{label}'{did_you_mean(label, self.axes[key])}; "
                    f"labels: {', '.join(self.axes[key])}"
                )
            labels[key] = label
            return deep_merge(config, expand_dotted(self.axes[key][label] or {}))
        if "." not in key and key not in RunConfig.model_fields:
            known = list(self.axes) + list(RunConfig.model_fields)
            raise ArchlabError(f"unknown axis or key '{key}'{did_you_mean(key, known)} (define it under 'axes:' "
                               f"or use a dotted config key such as train.learning_rate)")
        labels[key.split(".")[-1]] = _label(value)
        return deep_merge(config, expand_dotted({key: value}))

    def _matches(self, when: dict[str, Any], config: dict, labels: dict[str, str]) -> bool:
        for key, want in when.items():
            wants = want if isinstance(want, list) else [want]
            if key == "profile":
                have = self.profile
            elif key in self.axes:
                have = labels.get(key)
            else:
                have = get_dotted(config, key)
            if have not in wants and str(have) not in [str(w) for w in wants]:
                return False
        return True

    def block_runs(self, block: Block, default_section: str) -> list[tuple[RunConfig, dict[str, str], str, str | None]]:
        axes = list(block.matrix.items())
        for key, values in axes:
            if not isinstance(values, list) or not values:
                raise ArchlabError(f"matrix axis '{key}' must be a non-empty list")
        points = itertools.product(*[[(k, v) for v in vals] for k, vals in axes]) if axes else [()]
        runs = []
        for point in points:
            config, labels = self.base, {}
            for key, value in [*point, *block.set.items()]:
                config = self._apply(key, value, config, labels)
            for rule in self.plan.rules:
                if self._matches(rule.when, config, labels):
                    config = deep_merge(config, expand_dotted(rule.set))
            order = {name: i for i, name in enumerate(self.axes)}
            labels = dict(sorted(labels.items(), key=lambda kv: order.get(kv[0], len(order))))
            where = f"plan '{self.plan.name}', run {' · '.join(labels.values()) or block.name or 'defaults'}"
            runs.append((RunConfig.parse(config, where=where), labels, block.section or default_section, block.name))
        if block.name and len(runs) > 1:
            raise ArchlabError(f"block named '{block.name}' expands to {len(runs)} runs; a name fits a single run")
        return runs


def expand(plan: PlanConfig, profile: str | None = None, overrides: dict[str, Any] | None = None,
           max_runs: int = DEFAULT_MAX_RUNS) -> list[RunSpec]:
    """All runs of ``plan``, in plan order; identical configs are one run listed in every section that asks.

    Raises ``ArchlabError`` before building anything when the blocks multiply out to more than ``max_runs``.
    """
    expander = Expander(plan, profile, overrides or {})
    blocks = [Block(matrix=plan.matrix, section=plan.section)] if plan.matrix else []
    blocks += plan.include
    if not blocks:
        raise ArchlabError(f"plan '{plan.name}' has no runs: its matrix is empty and it has no include blocks")
    planned = sum(math.prod(len(v) if isinstance(v, list) else 1 for v in b.matrix.values()) for b in blocks)
    if planned > max_runs:
        raise ArchlabError(f"plan '{plan.name}' expands to {planned:,} runs, more than the limit of {max_runs}; "
                           f"shrink its matrix or pass --max-runs {planned}")
    specs: dict[str, RunSpec] = {}
    names: dict[str, str] = {}
    for block in _dependencies_first(plan, blocks):
        needs = {key: specs[names[dep]].id for key, dep in block.needs.items()}
        for config, labels, section, name in expander.block_runs(block, plan.section or DEFAULT_SECTION):
            if needs:  # part of the config, so the run's id changes when what it depends on changes
                config = RunConfig.parse({**config.to_dict(), "needs": needs}, where=f"plan '{plan.name}'")
            digest = config_hash(id_view(config.to_dict()))
            if name is not None:
                if names.setdefault(name, digest) != digest:
                    raise ArchlabError(f"duplicate run name '{name}' in plan '{plan.name}' for two different configs")
            if digest in specs:
                if section not in specs[digest].sections:
                    specs[digest].sections.append(section)
                continue
            slug = _slug(name) if name else _slug("-".join(labels.values())) if labels else "defaults"
            specs[digest] = RunSpec(f"{slug}-{digest[:6]}", labels, config, [section], name)
    return resolve_matches(plan, list(specs.values()))


def resolve_matches(plan: PlanConfig, specs: list[RunSpec]) -> list[RunSpec]:
    """Runs with ``match: params`` resized to the baseline's parameter count (archlab.plan.match)."""
    if not any(s.config.match is not None for s in specs):
        return specs
    from archlab.plan.match import resolve_match
    from archlab.plan.validate import _tokenizer

    baseline = find_baseline(plan, specs)
    if baseline.config.match is not None:
        raise ArchlabError(f"match: the baseline run '{baseline.title}' cannot itself be matched to the baseline")
    vocab = len(_tokenizer(baseline.config.data.tokenizer))
    out = []
    for spec in specs:
        if spec.config.match is not None:
            own = _tokenizer(spec.config.data.tokenizer)  # each model counted with its own tokenizer's size
            try:
                config = resolve_match(spec.config, baseline.config, vocab if own is None else len(own), vocab)
            except ArchlabError as exc:
                raise ArchlabError(f"run '{spec.title}': {exc}") from None
            digest = config_hash(id_view(config.to_dict()))
            spec = RunSpec(f"{spec.id.rsplit('-', 1)[0]}-{digest[:6]}", spec.labels, config, spec.sections, spec.name)
        out.append(spec)
    return out


def _dependencies_first(plan: PlanConfig, blocks: list[Block]) -> list[Block]:
    """Blocks in plan order, except that a block comes after the named blocks its ``needs`` refer to."""
    named = {b.name for b in blocks if b.name}
    for block in blocks:
        for key, dep in block.needs.items():
            if dep not in named:
                raise ArchlabError(f"plan '{plan.name}': needs.{key} names run '{dep}', but no block has that name"
                                   f"{did_you_mean(dep, named)} (give the single-run block 'name: {dep}')")
            if key.split(".")[0] not in RunConfig.model_fields or key.split(".")[0] == "needs":
                raise ArchlabError(f"plan '{plan.name}': needs key '{key}' is not a dotted run config key "
                                   f"(e.g. model.config.entropy_model_path)")
    ordered: list[Block] = []
    done: set[str] = set()
    pending = list(blocks)
    while pending:
        ready = [b for b in pending if set(b.needs.values()) <= done]
        if not ready:
            raise ArchlabError(f"plan '{plan.name}': the 'needs' of blocks {[b.name or b.section for b in pending]} "
                               f"form a cycle")
        for block in ready:
            ordered.append(block)
            pending.remove(block)
            if block.name:
                done.add(block.name)
    return ordered


def varied_keys(specs: list[RunSpec]) -> list[str]:
    """Dotted config keys whose values differ between runs (for 'what changed')."""
    flats = [flatten(s.config.to_dict()) for s in specs]
    keys = sorted(set().union(*flats))
    return [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]


def find_baseline(plan: PlanConfig, specs: list[RunSpec]) -> RunSpec | None:
    if plan.baseline is None:
        return specs[0]
    for spec in specs:
        flat = flatten(spec.config.to_dict())
        if all(spec.labels.get(k) == str(v) or flat.get(k) == v for k, v in plan.baseline.items()):
            return spec
    raise ArchlabError(f"baseline {plan.baseline} matches no run of plan '{plan.name}'")


def id_view(config: dict) -> dict:
    """The config as its run id hashes it: post-training settings at their defaults left out."""
    from archlab.config import later_defaults
    from archlab.data.config import NOT_IN_RUN_ID as DATA_LATER
    from archlab.train.config import FIRST_SCHEDULE_KEYS, NOT_IN_RUN_ID, ScheduleSpec

    def drop(section: dict, later: dict) -> dict:
        return {k: v for k, v in section.items() if later.get(k, object()) != v}

    train = drop(config.get("train", {}), NOT_IN_RUN_ID)
    if isinstance(train.get("schedules"), dict):
        schedule_later = later_defaults(ScheduleSpec, FIRST_SCHEDULE_KEYS)
        train["schedules"] = {name: drop(spec, schedule_later) if isinstance(spec, dict) else spec
                              for name, spec in train["schedules"].items()}
    view = {**config, "train": train}
    if isinstance(config.get("data"), dict):
        view["data"] = drop(config["data"], DATA_LATER)
    if view.get("match", "") is None:  # no match asked: the key did not exist when older runs were named
        del view["match"]
    view.pop("resources", None)  # where a run trains (GPUs, CPUs) is not what it computes
    return view
