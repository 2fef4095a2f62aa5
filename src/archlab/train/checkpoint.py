"""Atomic, checksummed checkpoints with fallback: a corrupt latest checkpoint falls back to the previous one.

Layout: ``checkpoints/step-000100/{model.safetensors, trainer_state.pt, meta.json}``; written into a
temporary folder and renamed, so a kill mid-write never leaves a half checkpoint under a real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

PREFIX = "step-"


@dataclass
class Restored:
    step: int
    trainer_state: dict[str, Any]
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
    random.setstate(state["python"])
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


def save_checkpoint(folder: Path, step: int, model: nn.Module, trainer_state: dict[str, Any], keep: int,
                    include_frozen: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{PREFIX}{step:07d}"
    tmp = folder / f".tmp-{PREFIX}{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(checkpoint_state(model, include_frozen), str(tmp / "model.safetensors"))
    torch.save(trainer_state, tmp / "trainer_state.pt")
    files = {name: _sha256(tmp / name) for name in ("model.safetensors", "trainer_state.pt")}
    (tmp / "meta.json").write_text(json.dumps({"step": step, "sha256": files}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    if not folder.exists():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def verify(path: Path) -> bool:
    try:
        meta = json.loads((path / "meta.json").read_text())
        return all(_sha256(path / name) == digest for name, digest in meta["sha256"].items())
    except (OSError, ValueError, KeyError):
        return False


def load_latest(folder: Path, model: nn.Module, warn=print) -> Restored | None:
    """Load the newest checkpoint that passes its checksum into ``model``; None if there is none."""
    for path in reversed(list_checkpoints(folder)):
        if not verify(path):
            warn(f"checkpoint {path.name} is corrupt (checksum mismatch); falling back to the previous one")
            continue
        load_trainable(model, path / "model.safetensors")
        state = torch.load(path / "trainer_state.pt", weights_only=False)
        return Restored(step=int(json.loads((path / "meta.json").read_text())["step"]), trainer_state=state, path=path)
    return None


def load_trainable(model: nn.Module, file: Path) -> None:
    state = load_file(str(file))
    missing_from_model = set(state) - set(model.state_dict())
    if missing_from_model:
        raise ValueError(f"checkpoint {file} holds tensors this model lacks: {sorted(missing_from_model)[:3]}")
    model.load_state_dict(state, strict=False)


def all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
