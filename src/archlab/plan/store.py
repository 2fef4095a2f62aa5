"""The run store: runs/<plan>/<run-id>/ with config.yaml, status.json (atomic), a lock, env.json."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

STATUSES = ("pending", "running", "done", "failed", "diverged")


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def id(self) -> str:
        return self.path.name

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "status.json").read_text())
        except (OSError, ValueError):
            return {"status": "pending"}

    def set_status(self, status: str, **extra: Any) -> None:
        assert status in STATUSES, status
        record = {"status": status, "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **extra}
        atomic_write(self.path / "status.json", json.dumps(record, indent=1))

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "config.yaml").read_text())

    def lock(self) -> FileLock:
        self.path.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path / ".lock"), timeout=0)

    def eval_results(self) -> dict[str, dict[str, Any]]:
        out = {}
        for file in sorted((self.path / "eval").glob("*.json")):
            try:
                out[file.stem] = json.loads(file.read_text())
            except ValueError:
                continue
        return out


class RunStore:
    def __init__(self, root: Path | str, plan_name: str):
        self.root = Path(root) / plan_name

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.root / run_id)


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
