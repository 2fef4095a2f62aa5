"""The run store: runs/<plan>/ holding one ``RunDir`` per run, the run lock, and the environment record."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from archlab.files import inside
from archlab.rundir import STATUSES, RunDir

__all__ = ["STATUSES", "RunDir", "RunStore", "environment", "try_lock"]


class RunStore:
    """runs/<plan>/: one ``RunDir`` per run id; every path is checked to stay under the runs root."""

    def __init__(self, root: Path | str, plan_name: str):
        self.root = inside(root, plan_name) if plan_name else Path(root)

    def run(self, run_id: str) -> RunDir:
        return RunDir(inside(self.root, run_id))

    def file(self, *parts: str) -> Path:
        """A plan-level output (REPORT.md, plots/...), refused if it would leave the plan folder."""
        return inside(self.root, *parts)


def try_lock(run: RunDir) -> FileLock | None:
    lock = run.lock()
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock


def environment() -> dict[str, Any]:
    import accelerate
    import torch
    import transformers

    import archlab

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(archlab.__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    return {
        "archlab": archlab.__version__,
        "git_sha": sha,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "platform": platform.platform(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
    }
