"""Atomic, checksummed checkpoints with fallback: an unusable latest checkpoint falls back to the previous one.

Layout: ``checkpoints/step-0000100/{model.safetensors, trainer_state.safetensors, trainer_state.json,
meta.json}``; written into a temporary folder and renamed, so a kill mid-write never leaves a half
checkpoint under a real name (the next start removes such temporary folders). Nothing is unpickled: a
checkpoint is read as data (see ``archlab.train.state_io``), so a planted file cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from archlab.errors import ArchlabError
from archlab.files import disk_full
from archlab.train.state_io import load_tree, save_tree

PREFIX = "step-"
TMP_PREFIX = f".tmp-{PREFIX}"
MODEL_FILE, STATE_NAME, META_FILE = "model.safetensors", "trainer_state", "meta.json"
FORMAT = 2  # 1 pickled trainer_state.pt, which is no longer read


class Unusable(Exception):
    """A checkpoint that cannot be loaded (checksum, missing or foreign tensors, old format)."""


@dataclass
class Restored:
    step: int
    trainer_state: dict[str, Any] | None
    path: Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_state(model: nn.Module, include_frozen: bool = True) -> dict[str, torch.Tensor]:
    """Parameters (tied ones once) and persistent buffers; without ``include_frozen``, only trainable ones.

    Frozen weights loaded from pretrained files come back identically from the run's config, so a grafted
    135M model checkpoints megabytes, not its whole base.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if (p.requires_grad or include_frozen) and p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            out[name] = p.detach().contiguous()
    for name, b in model.named_buffers():
        if b.data_ptr() not in seen and name in model.state_dict():
            out[name] = b.detach().contiguous()
    return out


def checkpoint_names(model: nn.Module, include_frozen: bool = True) -> list[str]:
    """The names ``checkpoint_state`` writes, read without touching the tensors (sharded models: FSDP)."""
    names = [name for name, p in model.named_parameters() if p.requires_grad or include_frozen]  # tied: once
    own = model.state_dict()
    return names + [name for name, _ in model.named_buffers() if name in own and name not in names]


def save_checkpoint(folder: Path, step: int, model: nn.Module, trainer_state: dict[str, Any], keep: int,
                    include_frozen: bool = True, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``step-N`` atomically; on a full disk the partial folder is removed and the older ones kept."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{PREFIX}{step:07d}"
    tmp = folder / f"{TMP_PREFIX}{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        save_file(checkpoint_state(model, include_frozen) if tensors is None else tensors, str(tmp / MODEL_FILE))
        files = [tmp / MODEL_FILE, *save_tree(tmp, STATE_NAME, trainer_state)]
        meta = {"step": step, "format": FORMAT, "sha256": {f.name: _sha256(f) for f in files}}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(exc):
            raise ArchlabError(f"disk full: no space left on the device holding {folder} while saving checkpoint "
                               f"step {step}; the last good checkpoint is kept; free space and run again to "
                               f"resume") from None
        raise
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_partial_saves(folder: Path) -> list[Path]:
    """Delete ``.tmp-step-*`` folders a kill during a save left behind (each can be a whole checkpoint)."""
    if not folder.is_dir():
        return []
    partial = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(TMP_PREFIX)]
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)
    return partial


def list_checkpoints(folder: Path) -> list[Path]:
    if not folder.exists():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def verify(path: Path) -> bool:
    try:
        meta = json.loads((path / META_FILE).read_text())
        return all(_sha256(path / name) == digest for name, digest in meta["sha256"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def load_latest(folder: Path, model: nn.Module, warn: Callable[[str], None] = print, *,
                include_frozen: bool = True, trainer_state: bool = True,
                load: Callable[[dict[str, torch.Tensor]], None] | None = None) -> Restored | None:
    """Load the newest usable checkpoint into ``model``; None if there is none.

    Usable: its checksums match, it holds every tensor ``checkpoint_state(model, include_frozen)`` names
    (an empty or truncated file never leaves a model half random) and nothing the model lacks, and, with
    ``trainer_state``, a readable trainer state. Each unusable one is reported through ``warn``.
    """
    for path in reversed(list_checkpoints(folder)):
        try:
            tensors, state, step = _read(path, model, include_frozen, trainer_state)
        except Unusable as exc:
            warn(f"checkpoint {path.name} is corrupt or unusable ({exc}); trying the previous one")
            continue
        if load is None:
            model.load_state_dict(tensors, strict=False)
        else:  # a sharded model takes the full tensors its own way
            load(tensors)
        return Restored(step=step, trainer_state=state, path=path)
    return None


def _read(path: Path, model: nn.Module, include_frozen: bool, trainer_state: bool):
    if not verify(path):
        raise Unusable("checksum mismatch or missing meta.json")
    meta = json.loads((path / META_FILE).read_text())
    if trainer_state and meta.get("format") != FORMAT:
        raise Unusable("written by an older archlab with a pickled trainer state, which is not read")
    try:
        tensors = load_file(str(path / MODEL_FILE))
    except Exception as exc:  # not a safetensors file
        raise Unusable(f"{MODEL_FILE} cannot be read: {type(exc).__name__}") from None
    check_tensors(tensors, model, include_frozen)
    state = None
    if trainer_state:
        try:
            state = load_tree(path, STATE_NAME)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise Unusable(f"trainer state cannot be read: {str(exc)[:120]}") from None
    return tensors, state, int(meta["step"])


def check_tensors(tensors: dict[str, torch.Tensor], model: nn.Module, include_frozen: bool) -> None:
    """Raise ``Unusable`` unless ``tensors`` are exactly what this model's checkpoint must hold, shapes included."""
    own = model.state_dict()
    foreign = sorted(set(tensors) - set(own))
    if foreign:
        raise Unusable(f"holds {len(foreign)} tensor(s) this model lacks, e.g. {foreign[0]}")
    missing = sorted(set(checkpoint_state(model, include_frozen)) - set(tensors))
    if missing:
        raise Unusable(f"lacks {len(missing)} tensor(s) of this model, e.g. {missing[0]}")
    wrong = [n for n, t in tensors.items() if t.shape != own[n].shape]
    if wrong:
        raise Unusable(f"{wrong[0]} has shape {tuple(tensors[wrong[0]].shape)}, the model "
                       f"{tuple(own[wrong[0]].shape)}")


def all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
