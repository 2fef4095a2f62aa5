"""The local pool executor: N runs at once on one machine, each in its own process, pinned to its share.

``archlab run PLAN --workers N`` starts up to N runs side by side. On CPU each gets ``cores // N`` torch
threads; with ``--gpus 0,1,...`` each run gets the GPUs it asks for (``resources.gpus``, default 1) through
``CUDA_VISIBLE_DEVICES`` and waits until that many are free (first come, first served, so a big run is
not starved by small ones). A run on more than one GPU is launched with ``torchrun``, one DDP rank per GPU.

Each run is a fresh ``python -m archlab.plan.pool`` process: its devices are fixed before CUDA starts, a
crash or an OOM kill takes only that run down, and the run lock (filelock) still keeps two executors off
one run. The worker's output goes to ``worker.log`` in its run folder; its last line carries the outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from archlab.errors import ArchlabError
from archlab.plan.deps import READY, gate
from archlab.plan.expand import RunSpec
from archlab.plan.runner import Outcome
from archlab.plan.store import RunDir, RunStore, single_process_store

OUTCOME_MARK = "ARCHLAB_OUTCOME "
WORKER_LOG = "worker.log"
THREADS_ENV = "ARCHLAB_TORCH_THREADS"
UPLOAD_EVERY_SECONDS = 30.0


def parse_gpus(text: str | None) -> list[str] | None:
    """``--gpus 0,1,3`` -> ['0', '1', '3']; one line naming the fix for anything else."""
    if text is None:
        return None
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids or not all(i.isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise ArchlabError(f"--gpus '{text}': give distinct GPU indices separated by commas, e.g. --gpus 0,1")
    return ids


def threads_per_run(workers: int, cores: int | None = None) -> int:
    """Each of ``workers`` CPU runs gets an equal share of the cores (at least one thread)."""
    return max(1, (cores or os.cpu_count() or 1) // max(1, workers))


@dataclass
class Slots:
    """Free GPU indices; a run takes k of them at once or waits."""

    free: list[str] = field(default_factory=list)

    def take(self, k: int) -> list[str] | None:
        if k > len(self.free):
            return None
        taken, self.free = self.free[:k], self.free[k:]
        return taken

    def give(self, ids: list[str]) -> None:
        self.free = sorted({*self.free, *ids}, key=int)


def gpus_needed(spec: RunSpec, pool_has_gpus: bool) -> int:
    """``resources.gpus`` when the run says; otherwise one GPU in a GPU pool, none on CPU."""
    asked = spec.config.resources.gpus if spec.config.resources is not None else None
    return asked if asked is not None else int(pool_has_gpus)


def child_env(threads: int, gpus: list[str] | None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), THREADS_ENV: str(threads)}
    if gpus is not None:  # also for a 0-GPU run in a GPU pool: it must not touch the others' devices
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env


def child_command(config: dict, folder: Path, processes: int = 1) -> list[str]:
    args = ["-m", "archlab.plan.pool", json.dumps(config), str(folder)]
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
                *args]
    return [sys.executable, *args]


@dataclass
class _Running:
    spec: RunSpec
    process: subprocess.Popen
    gpus: list[str]
    log: Path


def run_pool(specs: list[RunSpec], store: RunStore, console: Console | None = None, *, workers: int = 1,
             gpus: list[str] | None = None, on_outcome: Callable[[Outcome], None] | None = None,
             poll_seconds: float = 0.2) -> list[Outcome]:
    """Run ``specs`` with up to ``workers`` at once (default with --gpus: one per GPU); finished ones skipped."""
    console = console or Console()
    single_process_store(store, "the pool executor")
    workers = max(1, workers if workers > 1 or gpus is None else len(gpus))
    threads = threads_per_run(workers) if gpus is None else 1
    slots = Slots(list(gpus or []))
    outcomes: dict[str, Outcome] = {}
    queue: deque[RunSpec] = deque()
    for spec in specs:
        if store.run(spec.id).is_done():
            outcomes[spec.id] = Outcome(spec.id, "done", "already done")
        else:
            k = gpus_needed(spec, gpus is not None)
            if k and gpus is None:
                outcomes[spec.id] = Outcome(spec.id, "failed", f"needs {k} GPU(s) (resources.gpus); pass --gpus "
                                            f"0,1,... to the local pool, or use --executor ray")
            elif gpus is not None and k > len(gpus):
                outcomes[spec.id] = Outcome(spec.id, "failed", f"needs {k} GPUs (resources.gpus) but --gpus "
                                            f"gives {len(gpus)}")
            else:
                queue.append(spec)
    running: list[_Running] = []
    plan_ids = {s.id for s in specs}
    last_push = time.monotonic()
    where = f"GPUs {','.join(gpus)}" if gpus is not None else f"{threads} thread(s) each"
    with Progress(console=console) as progress:
        overall = progress.add_task(f"plan ({len(specs)} runs, {workers} at once, {where})", total=len(specs),
                                    completed=len(outcomes))

        def finished(outcome: Outcome) -> None:
            outcomes[outcome.run_id] = outcome
            if on_outcome:
                on_outcome(outcome)
            if outcome.status in ("failed", "diverged"):
                progress.console.print(f"[red]{outcome.status}[/red] {outcome.run_id}: {outcome.message}",
                                       soft_wrap=True)
            progress.advance(overall)

        try:
            while queue or running:
                while queue and len(running) < workers:
                    spec = _next_ready(queue, outcomes, plan_ids, finished)
                    if spec is None:
                        break  # the rest wait for the runs they need
                    k = gpus_needed(spec, gpus is not None)
                    taken = slots.take(k) if gpus is not None else []
                    if taken is None:
                        break  # first come, first served: wait for k free GPUs
                    queue.remove(spec)
                    store.pull(spec.id)  # a remote store: resume from the last uploaded checkpoint
                    running.append(_start(spec, store.run(spec.id), threads, taken if gpus is not None else None))
                    progress.console.print(f"started {spec.id}" + (f" on GPU {','.join(taken)}" if taken else ""))
                if queue and not running and _next_ready(queue, outcomes, plan_ids, finished) is None:
                    for spec in list(queue):  # only a cycle could leave them waiting on nothing (expand forbids it)
                        queue.remove(spec)
                        finished(Outcome(spec.id, "failed", "not started: the runs it needs never ran"))
                time.sleep(poll_seconds)
                if store.mirror is not None and time.monotonic() - last_push > UPLOAD_EVERY_SECONDS:
                    last_push = time.monotonic()
                    store.push(*[r.spec.id for r in running])  # new checkpoints of the runs in flight
                for item in [r for r in running if r.process.poll() is not None]:
                    running.remove(item)
                    store.push(item.spec.id)
                    slots.give(item.gpus)
                    finished(_outcome(item))
        except KeyboardInterrupt:
            _stop(running)  # each worker records its run as resumable before it exits
            raise
    return [outcomes[s.id] for s in specs]


def _next_ready(queue: deque[RunSpec], outcomes: dict[str, Outcome], plan_ids: set[str],
                finished: Callable[[Outcome], None]) -> RunSpec | None:
    """The first queued run whose dependencies are done; runs whose dependency failed leave the queue failed."""
    for spec in list(queue):
        state = gate(spec, outcomes, plan_ids)
        if isinstance(state, Outcome):
            queue.remove(spec)
            finished(state)
        elif state == READY:
            return spec
    return None


def _start(spec: RunSpec, run: RunDir, threads: int, gpus: list[str] | None) -> _Running:
    run.path.mkdir(parents=True, exist_ok=True)
    log = run.path / WORKER_LOG
    processes = len(gpus) if gpus else 1
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(child_command(spec.config.to_dict(), run.path, processes), stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env(threads, gpus))
    return _Running(spec, process, list(gpus or []), log)


def _outcome(item: _Running) -> Outcome:
    try:
        lines = item.log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        if line.startswith(OUTCOME_MARK):
            record = json.loads(line[len(OUTCOME_MARK):])
            return Outcome(item.spec.id, record["status"], record["message"])
    code = item.process.returncode
    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    return Outcome(item.spec.id, "failed", f"its worker process ended without an outcome ({how}; see "
                   f"{item.log}); run again to resume from the last checkpoint")


def _stop(running: list[_Running], grace: float = 60.0) -> None:
    for item in running:
        if item.process.poll() is None:
            item.process.terminate()
    deadline = time.monotonic() + grace
    for item in running:
        try:
            item.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            item.process.kill()


def _worker(argv: list[str]) -> int:
    """``python -m archlab.plan.pool CONFIG_JSON RUN_FOLDER``: one run, its outcome as the last line."""
    import signal

    import torch

    from archlab.errors import Terminated
    from archlab.plan.runner import run_one
    from archlab.plan.schema import RunConfig
    from archlab.train.distributed import place

    if os.environ.get(THREADS_ENV, "").isdigit():
        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    def on_sigterm(signum, frame):  # as the CLI: the run is recorded as resumable, not left "running"
        raise Terminated()

    signal.signal(signal.SIGTERM, on_sigterm)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    config, folder = RunConfig.parse(json.loads(argv[0]), where="pool worker"), Path(argv[1])
    try:
        outcome = run_one(config, RunDir(folder))
    except KeyboardInterrupt:
        outcome = Outcome(folder.name, "pending", "interrupted; run again to resume")
    if place().is_main:
        print(OUTCOME_MARK + json.dumps({"status": outcome.status, "message": outcome.message}), flush=True)
    return 0 if outcome.status in ("done", "running") else 1


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
