"""One run folder, ``runs/<plan>/<run-id>/``: the only code that knows its file names.

Training, evals, executors and the report read and write a run through ``RunDir``. Status records who
owns a running run (pid, host) and a heartbeat, so a run whose process was killed shows as
``interrupted`` instead of ``running`` forever, and is resumed by the next ``archlab run``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from archlab.files import atomic_write, inside

STATUSES = ("pending", "running", "done", "failed", "diverged", "interrupted")
HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 600.0  # no heartbeat for this long: the owner is gone (another host, or a reused pid)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MetricsLog:
    """metrics.jsonl: one JSON object per line, appended and flushed as it happens."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
        return out

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step`` (they will be logged again by the resumed run)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))


class RunDir:
    CONFIG, STATUS, METRICS, ENV, ERROR_LOG = "config.yaml", "status.json", "metrics.jsonl", "env.json", "error.log"
    SAMPLES, EVAL, CHECKPOINTS, MODEL, LOCK = "samples.jsonl", "eval", "checkpoints", "model", ".lock"
    SUMMARY = "summary.json"  # training totals: precision, compile, flops_per_token, train_flops

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._status_lock = threading.Lock()  # the heartbeat thread never overwrites a final status
        self._running: dict[str, Any] | None = None  # the running record this process wrote

    @property
    def id(self) -> str:
        return self.path.name

    # ----------------------------------------------------------------------------------------- paths
    def file(self, *parts: str) -> Path:
        """A path inside this run folder (refused if it would leave it)."""
        return inside(self.path, *parts)

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def model_dir(self) -> Path:
        return self.path / self.MODEL

    @property
    def error_log(self) -> Path:
        return self.path / self.ERROR_LOG

    @property
    def metrics(self) -> MetricsLog:
        return MetricsLog(self.path / self.METRICS)

    # ---------------------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """The recorded status; a ``running`` one whose owner is gone reads as ``interrupted``."""
        try:
            record = json.loads((self.path / self.STATUS).read_text())
        except (OSError, ValueError):
            return {"status": "pending"}
        if record.get("status") == "running":
            gone = self._owner_gone(record)
            if gone:
                record = {**record, "status": "interrupted", "message": f"{gone}; run again to resume"}
        return record

    def is_done(self) -> bool:
        return self.status().get("status") == "done"

    @staticmethod
    def _owner_gone(record: dict[str, Any]) -> str | None:
        owner = record.get("owner") or {}
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) \
                and not _pid_alive(owner["pid"]):
            return f"its process {owner['pid']} ended without finishing (killed?)"
        beat = record.get("heartbeat", record.get("updated"))
        try:
            age = time.time() - _dt.datetime.fromisoformat(beat).timestamp()
        except (TypeError, ValueError):
            return "its status has no heartbeat"
        return f"no heartbeat for {age / 60:.0f} minutes" if age > STALE_AFTER_SECONDS else None

    def set_status(self, status: str, **extra: Any) -> None:
        assert status in STATUSES, status
        record = {"status": status, "updated": _now(), **extra}
        if status == "running":
            record.update(owner={"pid": os.getpid(), "host": socket.gethostname()}, heartbeat=record["updated"])
        with self._status_lock:
            atomic_write(self.path / self.STATUS, json.dumps(record, indent=1))
            self._running = record if status == "running" else None

    def beat(self) -> None:
        """Refresh the heartbeat of a run this process owns."""
        with self._status_lock:
            record = self._running
            if record is not None:
                record["heartbeat"] = _now()
                atomic_write(self.path / self.STATUS, json.dumps(record, indent=1))

    @contextlib.contextmanager
    def heartbeat(self, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
        """Beat in a background thread while the body runs."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every):
                with contextlib.suppress(OSError):
                    self.beat()

        thread = threading.Thread(target=loop, name=f"heartbeat-{self.id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def lock(self) -> FileLock:
        self.path.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path / self.LOCK), timeout=0)

    # --------------------------------------------------------------------------------- other files
    def has_config(self) -> bool:
        return (self.path / self.CONFIG).is_file()

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write(self.path / self.CONFIG, yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        """The resolved config, read like a plan (duplicate keys refused); a damaged file is one error line."""
        from archlab.config import load_yaml

        return load_yaml(self.path / self.CONFIG)

    def write_env(self, env: dict[str, Any]) -> None:
        atomic_write(self.path / self.ENV, json.dumps(env, indent=1))

    def read_env(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / self.ENV).read_text())
        except (OSError, ValueError):
            return {}

    def update_env(self, extra: dict[str, Any]) -> None:
        """Add keys to env.json (e.g. the precision a run resolved once its trainer was built)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_env({**self.read_env(), **extra})

    def summary(self) -> dict[str, Any]:
        """Training totals (precision, compile, ``flops_per_token``, ``train_flops``); {} before training."""
        try:
            return json.loads((self.path / self.SUMMARY).read_text())
        except (OSError, ValueError):
            return {}

    def update_summary(self, values: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path / self.SUMMARY, json.dumps({**self.summary(), **values}, indent=1, default=float))

    def record_error(self, text: str) -> bool:
        """Write error.log; False (and no empty file) when it cannot be written, e.g. on a full disk."""
        try:
            atomic_write(self.error_log, text)
        except OSError:
            return False
        return True

    def write_eval(self, name: str, payload: dict[str, Any], items: list[dict[str, Any]] | None = None) -> None:
        if items:
            atomic_write(self.file(self.EVAL, f"{name}.items.jsonl"), _jsonl(items))
        atomic_write(self.file(self.EVAL, f"{name}.json"), json.dumps(payload, indent=1, default=float))

    def eval_results(self) -> dict[str, dict[str, Any]]:
        out = {}
        for file in sorted((self.path / self.EVAL).glob("*.json")):
            try:
                out[file.stem] = json.loads(file.read_text())
            except ValueError:
                continue
        return out

    def write_samples(self, rows: list[dict[str, Any]]) -> None:
        atomic_write(self.path / self.SAMPLES, _jsonl(rows))

    # ----------------------------------------------------------------------- readers for the report
    def read_samples(self) -> list[dict[str, Any]]:
        return MetricsLog(self.path / self.SAMPLES).read()  # same format: one JSON object a line

    def error_line(self) -> str:
        """The last line of error.log (the exception), or ''."""
        try:
            lines = [line for line in self.error_log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, default=float) + "\n" for r in rows)
