"""Shared pydantic base, YAML loading, deep merge and Hydra-style dotted ``key=value`` overrides.

Every config class forbids unknown keys; validation errors become one ``ArchlabError`` line that names
the key and the closest valid one, so a typo in a plan never silently trains the wrong thing.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from archlab.errors import ArchlabError, did_you_mean

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base of every archlab config: strict keys, field descriptions shown by the CLI."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @classmethod
    def parse(cls: type[C], data: dict[str, Any] | None, *, where: str = "") -> C:
        """Validate ``data``; raise ``ArchlabError`` with one readable line on failure."""
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            raise ArchlabError(explain_validation_error(cls, exc, where)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


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
    msg = err["msg"].removeprefix("Value error, ")  # a validator's own sentence, as written
    msg = msg if msg != err["msg"] else msg.lower()
    if not key:  # a model-level check: its sentence names the keys itself
        return f"{prefix}{msg}{more}"
    if got_s in msg:
        return f"{prefix}'{key}': {msg}{more}"
    return f"{prefix}'{key}': {msg} (got {got_s}){more}"


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ArchlabError(f"file not found: {path} (check the path; plans live under plans/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ArchlabError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ArchlabError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


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
