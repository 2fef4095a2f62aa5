"""Trainer state as data, never code: tensors in safetensors, everything else in JSON.

A checkpoint's trainer state (optimizer and scheduler state dicts, RNG states, counters) is a tree of
dicts, lists, tuples, numbers, strings, tensors and numpy arrays. ``save_tree`` writes the tensors to
``<name>.safetensors`` and the rest to ``<name>.json`` with small markers in their place; ``load_tree``
reads them back. Unlike ``torch.load`` of a pickle, reading a planted file can fail, but never runs code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

TENSOR, ARRAY, TUPLE, MAP = "__tensor__", "__ndarray__", "__tuple__", "__map__"
MARKERS = (TENSOR, ARRAY, TUPLE, MAP)


def tree_files(folder: Path, name: str) -> tuple[Path, Path]:
    return folder / f"{name}.safetensors", folder / f"{name}.json"


def save_tree(folder: Path, name: str, tree: Any) -> list[Path]:
    """Write ``tree`` as ``<name>.safetensors`` + ``<name>.json`` in ``folder``; returns both paths."""
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()

    def encode(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            ptr = t.untyped_storage().data_ptr()
            if ptr in storages:  # safetensors refuses two names on one storage
                t = t.clone()
            storages.add(t.untyped_storage().data_ptr())
            key = f"t{len(tensors)}"
            tensors[key] = t
            return {TENSOR: key}
        if isinstance(value, np.ndarray):
            return {ARRAY: value.tolist(), "dtype": str(value.dtype)}
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, tuple):
            return {TUPLE: [encode(v) for v in value]}
        if isinstance(value, list):
            return [encode(v) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) and k not in MARKERS for k in value):
                return {k: encode(v) for k, v in value.items()}
            return {MAP: [[encode(k), encode(v)] for k, v in value.items()]}
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        raise TypeError(f"trainer state holds a {type(value).__name__}, which is not stored (tensors, numbers, "
                        f"strings, lists and dicts only)")

    encoded = encode(tree)
    tensor_file, json_file = tree_files(folder, name)
    save_file(tensors, str(tensor_file))
    json_file.write_text(json.dumps(encoded), encoding="utf-8")
    return [tensor_file, json_file]


def load_tree(folder: Path, name: str) -> Any:
    """The tree ``save_tree`` wrote; ValueError/OSError for a missing, foreign or inconsistent file."""
    tensor_file, json_file = tree_files(folder, name)
    try:
        tensors = load_file(str(tensor_file))
    except Exception as exc:  # safetensors raises its own error type for a file that is not safetensors
        raise ValueError(f"{tensor_file.name} is not a safetensors file ({type(exc).__name__})") from None
    encoded = json.loads(json_file.read_text(encoding="utf-8"))

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if TENSOR in value:
            if value[TENSOR] not in tensors:
                raise ValueError(f"{json_file.name} names a tensor {value[TENSOR]!r} that {tensor_file.name} lacks")
            return tensors[value[TENSOR]]
        if ARRAY in value:
            dtype = np.dtype(value["dtype"])
            if dtype.kind not in "biuf":
                raise ValueError(f"{json_file.name}: array of dtype {dtype} is not stored")
            return np.asarray(value[ARRAY], dtype=dtype)
        if TUPLE in value:
            return tuple(decode(v) for v in value[TUPLE])
        if MAP in value:
            return {_hashable(decode(k)): decode(v) for k, v in value[MAP]}
        if "__float__" in value:
            return float(value["__float__"])
        return {k: decode(v) for k, v in value.items()}

    return decode(encoded)


def _hashable(key: Any) -> Any:
    if isinstance(key, list | dict | torch.Tensor | np.ndarray):
        raise ValueError("a dict key in the trainer state is not a plain value")
    return key
