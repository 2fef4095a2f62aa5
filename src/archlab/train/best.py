"""``load_best_model_at_end`` (HF semantics): the weights of the best evaluation by ``metric_for_best_model``
are kept beside the checkpoints, and loaded into the model when training ends, so the run's exported
``model/`` is the best one; the run's status records which step that was.

The snapshot is written at each evaluation that improves the metric (not only at a save step), so it
never depends on ``save_total_limit`` pruning; HF keeps the best *checkpoint*, which is the same thing
when ``save_steps`` equals ``eval_steps`` (the seed's recipe: both 500).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from archlab.train.checkpoint import TMP_PREFIX, checkpoint_state

BEST_DIR = "best-model"  # inside checkpoints/; not a "step-" folder, so resume never picks it
LOWER_IS_BETTER = {"eval_loss": "eval_loss", "loss": "eval_loss", "eval_bits_per_byte": "eval_bits_per_byte",
                   "bits_per_byte": "eval_bits_per_byte"}


def metric_key(name: str) -> str:
    """The trainer's metric for a ``metric_for_best_model`` name (HF accepts it with or without ``eval_``)."""
    return LOWER_IS_BETTER[name]


def save_best(checkpoints: Path, model: nn.Module, step: int, metric: str, value: float,
              include_frozen: bool = True) -> Path:
    folder = checkpoints / BEST_DIR
    tmp = checkpoints / f"{TMP_PREFIX}{BEST_DIR}-{os.getpid()}"  # a kill mid-save: removed by remove_partial_saves
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(checkpoint_state(model, include_frozen), str(tmp / "model.safetensors"))
    (tmp / "meta.json").write_text(json.dumps({"step": step, "metric": metric, "value": value}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def load_best(checkpoints: Path, model: nn.Module) -> dict | None:
    """Load the kept best weights into ``model``; their meta ({step, metric, value}), or None if none are kept."""
    folder = checkpoints / BEST_DIR
    try:
        meta = json.loads((folder / "meta.json").read_text())
        tensors = load_file(str(folder / "model.safetensors"))
    except (OSError, ValueError):
        return None
    model.load_state_dict(tensors, strict=False)
    return meta
