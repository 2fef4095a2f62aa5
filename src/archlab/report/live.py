"""The live plan table while ``archlab run`` works: run, status, step, loss, ETA, redrawn in place (rich Live)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from archlab.evals.lib.views import fmt
from archlab.plan import RunSpec, RunStore
from archlab.plan.executor import run_staged
from archlab.plan.runner import Outcome
from archlab.train import Callback


@dataclass
class LiveRow:
    title: str
    status: str
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    started: float | None = None
    first_step: int = 0
    note: str = ""

    def eta(self) -> str:
        if self.status != "running" or not self.started or not self.total or self.step is None:
            return ""
        done = self.step - self.first_step
        if done <= 0:
            return "…"
        seconds = (time.monotonic() - self.started) / done * (self.total - self.step)
        return f"{seconds / 60:.0f}m{seconds % 60:02.0f}s" if seconds >= 60 else f"{seconds:.0f}s"


class PlanTable:
    """Every run of the plan, as a rich renderable that Live redraws."""

    def __init__(self, specs: list[RunSpec], store: RunStore, title: str):
        self.title = title
        self.rows = {s.id: self._row(s, store) for s in specs}

    @staticmethod
    def _row(spec: RunSpec, store: RunStore) -> LiveRow:
        """A run as its folder left it: status, last step and loss (a finished or interrupted run shows them)."""
        run = store.run(spec.id)
        record = run.status()
        logged = [r for r in run.metrics.read() if isinstance(r.get("loss"), int | float)]
        return LiveRow(spec.title, record.get("status", "pending"), step=record.get("step") or
                       (logged[-1]["step"] if logged else None), loss=logged[-1]["loss"] if logged else None)

    def __rich__(self) -> Table:
        table = Table(title=self.title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
        table.add_column("run", overflow="fold")
        for name in ("status", "step", "loss", "ETA"):
            table.add_column(name, no_wrap=True, justify="left" if name == "status" else "right")
        table.add_column("note", overflow="fold", style="red")
        for row in self.rows.values():
            step = "—" if row.step is None else f"{row.step}/{row.total}" if row.total else str(row.step)
            table.add_row(row.title, row.status, step, fmt(row.loss) if row.loss is not None else "—", row.eta(),
                          row.note)
        return table


class LiveRun(Callback):
    """Feeds one run's step, loss and start time to its row."""

    def __init__(self, row: LiveRow):
        self.row = row

    def on_train_begin(self, trainer) -> None:
        self.row.status, self.row.total = "running", trainer.state.total_steps
        self.row.step = self.row.first_step = trainer.state.step
        self.row.started = time.monotonic()

    def on_step_end(self, trainer) -> None:
        self.row.step = trainer.state.step

    def on_log(self, trainer, record) -> None:
        if isinstance(record.get("loss"), int | float):
            self.row.loss = float(record["loss"])


def run_local_live(specs: list[RunSpec], store: RunStore, console: Console, title: str) -> list[Outcome]:
    """Run sequentially in this process (like ``run_local``) under a live status table of the whole plan."""
    table = PlanTable(specs, store, title)
    outcomes = []
    with Live(table, console=console, refresh_per_second=2, transient=False):
        for spec in specs:
            row = table.rows[spec.id]
            run = store.run(spec.id)
            if run.is_done():
                outcomes.append(Outcome(spec.id, "done", "already done"))
                row.status = "done"
                continue
            row.status = "starting"
            outcome = run_staged(spec.id, spec.config, store, [LiveRun(row)])  # a remote store: pull, upload
            row.status = outcome.status
            if outcome.status in ("failed", "diverged"):
                row.note = outcome.message
            outcomes.append(outcome)
    console.line()  # the last frame of the table ends without a newline where the console is not a terminal
    return outcomes
