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
from archlab.plan.store import RunDir, RunStore
from archlab.train import RichProgress

COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
           TimeElapsedColumn())


def _report(progress: Progress, outcome: Outcome) -> None:
    if outcome.status in ("failed", "diverged"):
        progress.console.print(f"[red]{outcome.status}[/red] {outcome.run_id}: {outcome.message}", soft_wrap=True)


def run_local(specs: list[RunSpec], store: RunStore, console: Console | None = None,
              on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run sequentially in this process with a progress bar per run."""
    outcomes = []
    with Progress(*COLUMNS, console=console or Console()) as progress:
        overall = progress.add_task(f"plan ({len(specs)} runs)", total=len(specs), info="")
        for spec in dependencies_first(specs):
            run = store.run(spec.id)
            if run.is_done():
                outcome = Outcome(spec.id, "done", "already done")
            else:
                outcome = run_one(spec.config, run, [RichProgress(progress, f"  {spec.id}")])
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
            _report(progress, outcome)
            progress.advance(overall)
    return outcomes


def dependencies_first(specs: list[RunSpec]) -> list[RunSpec]:
    """Plan order, moved only as far as needed so that every run comes after the runs it ``needs``."""
    by_id = {s.id: s for s in specs}
    ordered: list[RunSpec] = []
    placed: set[str] = set()

    def place(spec: RunSpec, path: tuple[str, ...]) -> None:
        if spec.id in placed:
            return
        if spec.id in path:
            raise ArchlabError(f"runs {' -> '.join(path + (spec.id,))} need each other in a cycle")
        for dep in spec.config.needs.values():
            if dep in by_id:
                place(by_id[dep], path + (spec.id,))
        placed.add(spec.id)
        ordered.append(spec)

    for spec in specs:
        place(spec, ())
    return ordered


def _run_remote(config_dict: dict, folder: str) -> Outcome:
    from archlab.plan.schema import RunConfig

    return run_one(RunConfig.model_validate(config_dict), RunDir(folder))


def run_ray(specs: list[RunSpec], store: RunStore, console: Console | None = None, *, address: str | None = None,
            num_cpus: float = 1, num_gpus: float = 0) -> list[Outcome]:
    """Each pending run as a Ray task requesting ``num_cpus``/``num_gpus``; finished runs are skipped."""
    try:
        import ray
    except ImportError:
        raise ArchlabError("the ray executor needs Ray: pip install 'archlab[ray]'") from None
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
            pending[task.remote(spec.config.to_dict(), str(run.path.resolve()))] = spec.id
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
