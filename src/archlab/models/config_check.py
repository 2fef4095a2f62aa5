"""Typed ``model.config`` / ``model.hf_config`` values: a wrong type is one line naming the key, before any build.

archlab's config classes take plain keyword arguments, so ``num_hidden_layers: two`` used to surface as
``'<' not supported between 'str' and 'int'`` from deep inside a constructor, and ``cms_lr: fast`` built a
model that failed only in training. Each value is checked against the annotation of the config class's
``__init__`` with pydantic (lax: YAML 1.1's ``3e-4`` string becomes the number it means), and a boolean where
only a number belongs is refused, as the other config sections do. transformers' own configs are strict
dataclasses that check themselves; their multi-line errors are turned into the same one line here.
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
from typing import Any

from huggingface_hub.errors import StrictDataclassError
from pydantic import TypeAdapter, ValidationError

from archlab.config import numeric_only
from archlab.errors import ArchlabError, did_you_mean


@functools.cache
def _init_hints(config_class: type) -> dict[str, Any]:
    """The resolved annotations of ``config_class.__init__``; {} where they cannot be resolved."""
    try:
        return typing.get_type_hints(config_class.__init__)
    except Exception:  # a name only imported for type checkers: leave the class to check itself
        return {}


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter | None:
    if annotation is Any:
        return None
    try:
        return TypeAdapter(annotation)
    except Exception:  # an annotation pydantic cannot build a validator for (a torch type, ...)
        return None


def checked_values(config_class: type, values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``values`` checked against ``config_class.__init__``'s annotations, numbers written as strings parsed.

    ``None`` is passed through (several sizes are derived when left out); unannotated keys are not checked.
    """
    hints = _init_hints(config_class)
    checked = dict(values)
    for key, value in values.items():
        annotation = hints.get(key)
        adapter = None if annotation is None or value is None else _adapter(annotation)
        if adapter is None:
            continue
        if isinstance(value, bool) and numeric_only(annotation):
            raise ArchlabError(f"{prefix}.{key}: a boolean is not a number (got {value!r}); "
                               f"{config_class.__name__} takes {type_label(annotation)}")
        try:
            checked[key] = adapter.validate_python(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = "".join(f"[{p}]" for p in err["loc"])
            raise ArchlabError(f"{prefix}.{key}{where}: {err['msg'][:1].lower()}{err['msg'][1:]} (got {value!r}); "
                               f"{config_class.__name__} takes {type_label(annotation)}") from None
    return checked


def config_key_rows(config_class: type) -> list[tuple[str, str, str]]:
    """(key, type, default) of every keyword of ``config_class.__init__``: what ``model.config`` takes."""
    hints = _init_hints(config_class)
    rows = []
    for key, param in inspect.signature(config_class.__init__).parameters.items():
        if key == "self" or param.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            continue
        annotation = hints.get(key, param.annotation)
        type_name = "" if annotation is inspect.Parameter.empty else type_label(annotation)
        default = "required" if param.default is inspect.Parameter.empty else repr(param.default)
        rows.append((key, type_name, default))
    return rows


def type_label(annotation: Any) -> str:
    """'int', 'list[int] | None', "Union[bool, Literal['auto']]": an annotation as a reader writes it."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", text)  # typing.Any, archlab.x.Spec -> Any, Spec


def strict_error_line(exc: StrictDataclassError, prefix: str) -> str:
    """One line from transformers' strict-dataclass error ("Validation error for field 'x':" + the cause below)."""
    text = str(exc)
    field = re.search(r"field '([^']+)'", text)
    cause = [line.strip() for line in text.splitlines() if line.strip()][-1] if text.strip() else type(exc).__name__
    cause = re.sub(r"^\w+Error: ", "", cause)
    cause = re.sub(r"^Field '[^']+' ", "", cause)
    return f"{prefix}{'.' + field.group(1) if field else ''}: {cause[:200]}"


__all__ = ["StrictDataclassError", "checked_values", "config_key_rows", "strict_error_line", "type_label"]


def unknown_value_line(exc: KeyError, values: dict[str, Any], prefix: str) -> str | None:
    """A constructor's KeyError (a name looked up in a table, e.g. ``activation_function: gelu_neww`` in
    transformers' ACT2FN, whose ``get_activation`` words it "function gelu_neww not found in ACT2FN mapping") as
    the key of ``values`` that holds the name; None when no string value is that name."""
    missing = str(exc.args[0]) if exc.args else ""
    key = next((k for k, v in values.items() if isinstance(v, str) and v
                and (v == missing or re.search(rf"(?<![\w-]){re.escape(v)}(?![\w-])", missing))), None)
    if key is None:
        return None
    from transformers.activations import ACT2FN

    value = values[key]
    hint = ""
    if "ACT2FN" in missing or re.search(r"(^|_)act(ivation)?(_|$)", key):
        hint = f"{did_you_mean(value, list(ACT2FN))}; known: {', '.join(sorted(ACT2FN))}"
    return f"{prefix}.{key}: unknown value {value!r}{hint}"
