"""Executors: run every pending run of a plan, skipping done ones and resuming unfinished ones.

``local`` runs one after another in this process with a progress bar per run. ``ray`` submits each
run as a Ray task with its own CPU/GPU request, on a local or remote Ray cluster; the run store must be
a path every worker can reach (a shared filesystem for a multi-machine cluster).
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from archlab.errors import ArchlabError
from archlab.plan.expand import RunSpec
from archlab.plan.runner import Outcome, run_one
from archlab.plan.schema import RunConfig
from archlab.plan.store import RunStore, single_process_store
from archlab.train import Callback, RichProgress

COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
           TimeElapsedColumn())


class Uploader(Callback):
    """With a remote run store: upload each new checkpoint as training goes, and everything at the end."""

    def __init__(self, store: RunStore, run_id: str):
        self.store, self.run_id, self.seen = store, run_id, ()

    def on_step_end(self, trainer) -> None:
        if self.store.mirror is None or not trainer.checkpoint_dir.is_dir():
            return
        names = tuple(sorted(p.name for p in trainer.checkpoint_dir.iterdir() if p.name.startswith("step-")))
        if names != self.seen:
            self.seen = names
            self.store.push(self.run_id)

    def on_train_end(self, trainer) -> None:
        self.store.push(self.run_id)


def run_staged(spec_id: str, config: RunConfig, store: RunStore, callbacks: list[Callback] | None = None) -> Outcome:
    """``run_one`` on a store that may be remote: pull the run first, upload as it goes and when it ends."""
    run = store.run(spec_id)
    store.pull(spec_id)
    try:
        return run_one(config, run, [*(callbacks or []), Uploader(store, spec_id)])
    finally:
        store.push(spec_id)


def _report(progress: Progress, outcome: Outcome) -> None:
    if outcome.status in ("failed", "diverged"):
        progress.console.print(f"[red]{outcome.status}[/red] {outcome.run_id}: {outcome.message}", soft_wrap=True)


def run_local(specs: list[RunSpec], store: RunStore, console: Console | None = None,
              on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run sequentially in this process with a progress bar per run."""
    outcomes = []
    with Progress(*COLUMNS, console=console or Console()) as progress:
        overall = progress.add_task(f"plan ({len(specs)} runs)", total=len(specs), info="")
        for spec in specs:
            run = store.run(spec.id)
            if run.is_done():
                outcome = Outcome(spec.id, "done", "already done")
            else:
                outcome = run_staged(spec.id, spec.config, store, [RichProgress(progress, f"  {spec.id}")])
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
            _report(progress, outcome)
            progress.advance(overall)
    return outcomes


def _run_remote(config_dict: dict, root: str, plan_name: str, run_id: str) -> Outcome:
    """A Ray task: opens the store itself, so a remote store is staged on the worker's own disk."""
    return run_staged(run_id, RunConfig.model_validate(config_dict), RunStore(root, plan_name))


def run_ray(specs: list[RunSpec], store: RunStore, console: Console | None = None, *, address: str | None = None,
            num_cpus: float = 1, num_gpus: float = 0) -> list[Outcome]:
    """Each pending run as a Ray task requesting ``num_cpus``/``num_gpus``; finished runs are skipped."""
    try:
        import ray
    except ImportError:
        raise ArchlabError("the ray executor needs Ray: pip install 'archlab[ray]'") from None
    single_process_store(store, "the ray executor")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_run_remote)
    outcomes: dict[str, Outcome] = {}
    pending = {}
    for spec in specs:
        run = store.run(spec.id)
        if run.is_done():
            outcomes[spec.id] = Outcome(spec.id, "done", "already done")
        else:
            pending[task.remote(spec.config.to_dict(), *store.source, spec.id)] = spec.id
    with Progress(*COLUMNS, console=console or Console()) as progress:
        overall = progress.add_task(f"plan ({len(specs)} runs on ray)", total=len(specs), info="",
                                    completed=len(outcomes))
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                run_id = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # a worker that died: the run stays resumable
                    outcome = Outcome(run_id, "failed", f"ray task failed: {type(exc).__name__}: {exc}")
                outcomes[run_id] = outcome
                _report(progress, outcome)
                progress.advance(overall)
    return [outcomes[s.id] for s in specs]
