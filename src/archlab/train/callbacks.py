"""The trainer's callback protocol, the metrics log, and the rich progress bar."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archlab.rundir import MetricsLog

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
    def on_event(self, trainer: Trainer, message: str) -> None:
        """A notice worth a person's attention (resumed from a checkpoint, a corrupt one skipped, ...)."""


__all__ = ["Callback", "MetricsLog", "RichProgress"]


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

    def on_event(self, trainer: Trainer, message: str) -> None:
        self.progress.console.print(f"{self.description.strip()}: {message}", soft_wrap=True, markup=False)
