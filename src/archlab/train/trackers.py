"""Trackers through accelerate (``train.report_to``, as in HF TrainingArguments), with local defaults.

- tensorboard: event files under ``<run>/tensorboard/``.
- wandb: offline (files under ``<run>/wandb/``) unless ``WANDB_MODE`` or ``WANDB_API_KEY`` says otherwise;
  ``wandb sync`` uploads them later.
- mlflow: a local SQLite store, ``<runs>/<plan>/mlflow.db`` (one per plan, a run per archlab run), unless
  ``MLFLOW_TRACKING_URI`` is set; ``mlflow ui --backend-store-uri sqlite:///…/mlflow.db`` shows it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def tracker_init_kwargs(names: list[str], run_dir: Path) -> dict[str, dict[str, Any]]:
    """accelerate ``init_trackers(init_kwargs=...)`` for the trackers in ``names``; sets the MLflow store."""
    out: dict[str, dict[str, Any]] = {}
    if "wandb" in names:
        offline = "WANDB_MODE" not in os.environ and "WANDB_API_KEY" not in os.environ
        out["wandb"] = {"name": run_dir.name, "dir": str(run_dir), **({"mode": "offline"} if offline else {})}
    if "mlflow" in names:
        if "MLFLOW_TRACKING_URI" not in os.environ:
            import mlflow

            mlflow.set_tracking_uri(f"sqlite:///{(run_dir.parent / 'mlflow.db').resolve()}")
        out["mlflow"] = {"run_name": run_dir.name}
    return out


def tracker_project_dir(names: list[str], run_dir: Path) -> str:
    """accelerate's ``project_dir``: TensorBoard writes ``<project_dir>/<project name>/``."""
    return str(run_dir / "tensorboard") if "tensorboard" in names else str(run_dir)
