"""The trainer's callback protocol, the metrics log, and the rich progress bar."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archlab.train.loop import Trainer


class Callback:
    """Override any hook; each receives the trainer (``trainer.state``, ``trainer.model``, ``trainer.cfg``)."""

    def on_train_begin(self, trainer: Trainer) -> None: ...
    def on_step_begin(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer) -> None: ...
    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def on_evaluate(self, trainer: Trainer, metrics: dict[str, Any]) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


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
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)


class RichProgress(Callback):
    """One progress bar per run, showing step, loss and throughput."""

    def __init__(self, progress, description: str):
        self.progress, self.description, self.task = progress, description, None

    def on_train_begin(self, trainer: Trainer) -> None:
        self.task = self.progress.add_task(
            self.description, total=trainer.state.total_steps, completed=trainer.state.step, info=""
        )

    def on_step_end(self, trainer: Trainer) -> None:
        self.progress.update(self.task, completed=trainer.state.step)

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if "loss" in record:
            info = f"loss {record['loss']:.3f}  {record.get('tokens_per_second', 0):,.0f} tok/s"
            self.progress.update(self.task, info=info)

    def on_train_end(self, trainer: Trainer) -> None:
        self.progress.update(self.task, completed=trainer.state.step)
