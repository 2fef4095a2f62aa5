"""The run store: runs/<plan>/ holding one ``RunDir`` per run, the run lock, and the environment record."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from archlab.errors import ArchlabError
from archlab.files import SLUG_RULE, inside, is_slug
from archlab.plan.remote import Mirror, local_root, staging_root
from archlab.rundir import STATUSES, RunDir

__all__ = ["STATUSES", "RunDir", "RunStore", "environment", "try_lock"]


class RunStore:
    """runs/<plan>/: one ``RunDir`` per run id; every path is checked to stay under the runs root.

    ``root`` is a local path (or ``file://`` URL), used as it is, or any other fsspec URL (``memory://``,
    ``s3://``, ``gs://``): then ``root`` is a local staging copy mirrored to the remote (``archlab.plan.remote``).
    """

    def __init__(self, root: Path | str, plan_name: str):
        local = local_root(root)
        self.mirror: Mirror | None = None
        if local is None:  # a remote store: work in a local staging copy of runs/<plan>/
            url = "/".join(p for p in (str(root).rstrip("/"), plan_name) if p)
            if plan_name and not is_slug(plan_name):
                raise ArchlabError(f"refusing plan name '{plan_name}' in {root}: names must be {SLUG_RULE}")
            self.mirror = Mirror(url, staging_root(url))
            self.root = self.mirror.local
            self.root.mkdir(parents=True, exist_ok=True)
            self._pulled: set[str] = set()
        else:
            blocking = next((p for p in (Path(local), *Path(local).parents) if p.exists()), None)
            if blocking is not None and not blocking.is_dir():
                raise ArchlabError(f"--runs-dir {local}: {blocking} is a file, not a folder; pass a folder "
                                   f"(it is created if missing)")
            self.root = inside(local, plan_name) if plan_name else Path(local)
        # how another process (a Ray task, a pool worker) opens this same store
        self.source = (str(root) if self.mirror else str(Path(local).resolve()), plan_name)

    @property
    def where(self) -> str:
        return f"{self.mirror.url} (staged in {self.root})" if self.mirror else str(self.root)

    def run(self, run_id: str) -> RunDir:
        run = RunDir(inside(self.root, run_id))
        if self.mirror is not None and run_id not in self._pulled:
            self._pulled.add(run_id)
            self.mirror.pull(run_id, bulky=False)  # status, metrics, evals: what plan and report read
        return run

    def pull(self, run_id: str) -> None:
        """Before training a run: its checkpoints too, so it resumes from the last one uploaded."""
        if self.mirror is not None:
            self.mirror.pull(run_id, bulky=True)

    def push(self, *relative: str) -> None:
        """Upload what changed in a run folder (or plan-level files) to the remote store; no-op when local."""
        if self.mirror is not None:
            for rel in relative:
                self.mirror.push(rel)

    def file(self, *parts: str) -> Path:
        """A plan-level output (REPORT.md, plots/...), refused if it would leave the plan folder."""
        return inside(self.root, *parts)


def single_process_store(store: RunStore, executor: str) -> None:
    """memory:// lives inside one process: executors that train in other processes cannot share it."""
    if store.mirror is not None and store.mirror.proto == "memory":
        raise ArchlabError(f"{executor} trains in other processes, which cannot see {store.mirror.url}: memory:// "
                           f"lives in one process; use a path, file://, s3:// or gs://")


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
