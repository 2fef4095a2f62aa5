"""Executors: run every pending run of a plan, skipping done ones and resuming unfinished ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from archlab.plan.expand import RunSpec
from archlab.plan.runner import Outcome, run_one
from archlab.plan.store import RunStore
from archlab.train import RichProgress


def run_local(specs: list[RunSpec], store: RunStore, console: Console | None = None,
              on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run sequentially in this process with a progress bar per run."""
    console = console or Console()
    outcomes = []
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task(f"plan ({len(specs)} runs)", total=len(specs), info="")
        for spec in specs:
            run = store.run(spec.id)
            if run.status().get("status") == "done":
                outcome = Outcome(spec.id, "done", "already done")
            else:
                outcome = run_one(spec.config, run, [RichProgress(progress, f"  {spec.id}")])
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
            if outcome.status in ("failed", "diverged"):
                progress.console.print(f"[red]{outcome.status}[/red] {spec.id}: {outcome.message}")
            progress.advance(overall)
    return outcomes


def default_runs_root() -> Path:
    return Path("runs")
