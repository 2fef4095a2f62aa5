"""Shared pydantic base, YAML loading, deep merge and Hydra-style dotted ``key=value`` overrides.

Every config class forbids unknown keys; validation errors become one ``ArchlabError`` line that names
the key and the closest valid one, so a typo in a plan never silently trains the wrong thing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from archlab.errors import ArchlabError, did_you_mean

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base of every archlab config: strict keys, field descriptions shown by the CLI."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic reads ``max_steps: true`` as 1; a boolean where a number belongs is a mistake."""
        if isinstance(value, bool) and info.field_name and numeric_only(cls.model_fields[info.field_name].annotation):
            raise ValueError("a boolean is not a number")
        return value

    @classmethod
    def parse(cls: type[C], data: dict[str, Any] | None, *, where: str = "") -> C:
        """Validate ``data``; raise ``ArchlabError`` with one readable line on failure."""
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            raise ArchlabError(explain_validation_error(cls, exc, where)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def numeric_only(annotation: Any) -> bool:
    """An int/float field (optionally None) that does not also accept bool."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = set(typing.get_args(annotation)) - {type(None)}
    else:
        options = {annotation}
    return bool(options) and options <= {int, float}


def _field_names_at(cls: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """Valid keys of the (nested) model that ``path`` points into, for 'did you mean'."""
    model: Any = cls
    for part in path:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            break
        annotation = fields[part].annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}) or [])


def explain_validation_error(cls: type[BaseModel], exc: ValidationError, where: str = "") -> str:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not isinstance(p, int))
    key = ".".join(str(p) for p in err["loc"])
    prefix = f"{where}: " if where else ""
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    if err["type"] == "extra_forbidden":
        valid = _field_names_at(cls, loc[:-1])
        hint = did_you_mean(str(loc[-1]), valid) if valid else ""
        return f"{prefix}unknown key '{key}'{hint}{more}"
    if err["type"] == "missing":
        return f"{prefix}missing required key '{key}'{more}"
    got = err.get("input")
    got_s = repr(got) if not isinstance(got, dict | list) else type(got).__name__
    alternatives = _union_alternatives(cls, exc.errors())
    if alternatives:  # one wrong value of a union field (bf16: true | false | 'auto'), not several problems
        key = ".".join(str(p) for p in err["loc"][:-1])
        return f"{prefix}'{key}': input should be {alternatives} (got {got_s})"
    if err["type"] == "value_error":  # our own validators' messages, without pydantic's "Value error, "
        what = str(err.get("ctx", {}).get("error", err["msg"]))
        if not key:  # a model-level check: its sentence names the keys itself
            return f"{prefix}{what}{more}"
        got_part = "" if isinstance(got, dict | list) or got_s in what else f" (got {got_s})"
        return f"{prefix}'{key}': {what}{got_part}{more}"
    return f"{prefix}'{key}': {err['msg'].lower()} (got {got_s}){more}"


def _union_alternatives(cls: type[BaseModel], errors: list[dict]) -> str | None:
    """"a valid boolean or 'auto'" when every error is one member of the same union field refusing one value."""
    locs = [tuple(e["loc"]) for e in errors]
    if len(errors) < 2 or len({loc[:-1] for loc in locs}) != 1 or not locs[0][:-1]:
        return None
    members = {str(loc[-1]) for loc in locs}
    if members & set(_field_names_at(cls, tuple(p for p in locs[0][:-1] if not isinstance(p, int)))):
        return None  # the last parts are fields of a nested config: separate problems
    if len({repr(e.get("input")) for e in errors}) != 1 or not all(e["msg"].startswith("Input should be ") for e in errors):
        return None
    return " or ".join(dict.fromkeys(e["msg"].removeprefix("Input should be ").split(", ")[0] for e in errors))


MAX_YAML_VALUES = 100_000  # a plan is hundreds of values; YAML aliases can make billions out of a few lines
MAX_YAML_DEPTH = 64


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML says they are an error; PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first at line {first_line[key]}); keep one", key_node.start_mark)
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def read_text_file(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of a regular file, or one ``ArchlabError`` line (missing, a folder, a FIFO, binary...)."""
    path = Path(path)
    try:
        if not path.exists():
            raise ArchlabError(f"{what} not found: {path} (check the path; plans live under plans/)")
        if path.is_dir():
            raise ArchlabError(f"{path} is a folder; give a {what} inside it")
        if not path.is_file():  # a FIFO or device would block or never end
            raise ArchlabError(f"{path} is not a regular file; give a {what}")
        raw = path.read_bytes()
    except OSError as exc:
        raise ArchlabError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArchlabError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                           f"save it as UTF-8") from None
    if "\x00" in text:
        raise ArchlabError(f"{path}: a binary file (it contains NUL bytes), not a text {what}")
    return text


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    text = read_text_file(path, "file")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ArchlabError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:
        raise ArchlabError(f"{path}: nested too deeply (more than {MAX_YAML_DEPTH} levels)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ArchlabError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    check_size(data, str(path))
    return data


def check_size(data: Any, where: str) -> None:
    """Refuse data that expands past ``MAX_YAML_VALUES`` values or ``MAX_YAML_DEPTH`` levels.

    YAML aliases share one object many times; copying, validating or hashing expands every use, so a
    ten-line "billion laughs" file would fill the memory. Counting each use stops it in microseconds.
    """
    stack, count = [(data, 1)], 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise ArchlabError(f"{where}: expands to more than {MAX_YAML_VALUES:,} values (YAML aliases '*name' "
                               f"repeat what they point to); write the values out or use fewer aliases")
        if depth > MAX_YAML_DEPTH:
            raise ArchlabError(f"{where}: nested too deeply (more than {MAX_YAML_DEPTH} levels)")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list | tuple):
            stack.extend((v, depth + 1) for v in value)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``update`` merged into ``base`` recursively (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def expand_dotted(flat: dict[str, Any]) -> dict[str, Any]:
    """{'train.learning_rate': 1e-3} -> {'train': {'learning_rate': 1e-3}} (values that are dicts expand too)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if isinstance(value, dict):
            value = expand_dotted(value)
        node = out
        parts = str(key).split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ArchlabError(f"key '{key}' sets inside '{part}', which already holds a value")
            node = nxt
        last = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            node[last] = deep_merge(node[last], value)
        else:
            node[last] = value
    return out


def get_dotted(data: dict[str, Any], key: str, default: Any = None) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Hydra-style ``a.b=value`` strings to a nested dict; values are parsed as YAML scalars/lists."""
    flat: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("+")
        if not sep or not key:
            raise ArchlabError(f"override '{item}' is not key=value (example: train.learning_rate=3e-4)")
        try:
            flat[key] = _number_or_self(yaml.safe_load(raw)) if raw.strip() else ""
        except yaml.YAMLError:
            flat[key] = raw
    return expand_dotted(flat)


def _number_or_self(value: Any) -> Any:
    """YAML 1.1 reads '3e-4' as a string; a command line means the number."""
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out


def config_hash(data: dict[str, Any], length: int = 8) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def later_defaults(cls: type[Config], first: frozenset[str]) -> dict[str, Any]:
    """Fields of ``cls`` added after the keys ``first``, with their defaults as a config dict writes them: at
    these values a run id leaves them out, so adding a key does not rename, and re-run, every finished run."""
    out = {}
    for name, field in cls.model_fields.items():
        if name in first or field.is_required():
            continue
        default = field.get_default(call_default_factory=True)
        out[name] = default.model_dump(mode="json") if isinstance(default, Config) else default
    return out
