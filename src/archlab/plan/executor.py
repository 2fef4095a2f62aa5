"""Executors: run every pending run of a plan, skipping done ones and resuming unfinished ones.

``local`` runs one after another in this process with a progress bar per run. ``ray`` submits each
run as a Ray task with its own CPU/GPU request, on a local or remote Ray cluster; the run store must be
a path every worker can reach (a shared filesystem for a multi-machine cluster).
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from archlab.errors import ArchlabError, first_line
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
        for spec in dependencies_first(specs):
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


def _run_remote(config_dict: dict, root: str, plan_name: str, run_id: str, callbacks: list[Callback]) -> Outcome:
    """A Ray task: opens the store itself, so a remote store is staged on the worker's own disk. A retry
    after a lost worker finds the run's last checkpoint (the dead worker's file lock went with it)."""
    return run_staged(run_id, RunConfig.model_validate(config_dict), RunStore(root, plan_name), callbacks)


def ray_resources(spec: RunSpec, num_cpus: float, num_gpus: float) -> dict[str, float]:
    """A run's own ``resources`` (from the plan) over the executor's defaults."""
    asked = spec.config.resources
    cpus = asked.cpus if asked is not None and "cpus" in asked.model_fields_set else num_cpus
    gpus = asked.gpus if asked is not None and asked.gpus is not None else num_gpus
    return {"num_cpus": cpus, "num_gpus": gpus}


def run_ray(specs: list[RunSpec], store: RunStore, console: Console | None = None, *, address: str | None = None,
            num_cpus: float = 1, num_gpus: float = 0, max_retries: int = 3,
            callbacks: list[Callback] | None = None) -> list[Outcome]:
    """Each pending run as a Ray task with its resources (the plan's ``resources`` or ``num_cpus``/``num_gpus``);
    finished runs are skipped; a task whose worker dies is retried up to ``max_retries`` times and resumes
    from the run's last checkpoint. ``address``: ``auto`` (a running cluster), ``ray://host:10001`` (Ray
    Client), or None (start a local one)."""
    try:
        import ray
    except ImportError:
        raise ArchlabError("the ray executor needs Ray: pip install 'archlab[ray]'") from None
    single_process_store(store, "the ray executor")
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as exc:
            raise ArchlabError(f"--ray-address {address}: no Ray cluster there ({first_line(exc)}); start one with "
                               f"`ray start --head` or leave the option out for a local one") from None
    task = ray.remote(max_retries=max_retries, retry_exceptions=False)(_run_remote)
    from archlab.plan.deps import READY, gate

    outcomes: dict[str, Outcome] = {}
    waiting: list[RunSpec] = []
    for spec in specs:
        if store.run(spec.id).is_done():
            outcomes[spec.id] = Outcome(spec.id, "done", "already done")
        else:
            waiting.append(spec)
    plan_ids = {s.id for s in specs}
    pending = {}

    def submit_ready() -> None:
        """Submit each waiting run whose dependencies are done (a run must not start before what it needs)."""
        for spec in list(waiting):
            state = gate(spec, outcomes, plan_ids)
            if isinstance(state, Outcome):
                waiting.remove(spec)
                outcomes[spec.id] = state
                _report(progress, state)
                progress.advance(overall)
            elif state == READY:
                waiting.remove(spec)
                options = task.options(**ray_resources(spec, num_cpus, num_gpus))
                pending[options.remote(spec.config.to_dict(), *store.source, spec.id, list(callbacks or []))] = spec.id

    with Progress(*COLUMNS, console=console or Console()) as progress:
        overall = progress.add_task(f"plan ({len(specs)} runs on ray)", total=len(specs), info="",
                                    completed=len(outcomes))
        submit_ready()
        while pending or waiting:
            if not pending:  # only a cycle could leave runs waiting on nothing (expand forbids it)
                for spec in waiting:
                    outcomes[spec.id] = Outcome(spec.id, "failed", "not started: the runs it needs never ran")
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                run_id = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # retries exhausted: the run stays resumable
                    outcome = Outcome(run_id, "failed", f"ray task failed after {max_retries} retries: "
                                      f"{type(exc).__name__}: {first_line(exc)}; run again to resume")
                outcomes[run_id] = outcome
                _report(progress, outcome)
                progress.advance(overall)
            submit_ready()
    return [outcomes[s.id] for s in specs]


