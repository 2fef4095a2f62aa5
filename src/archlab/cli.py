"""The ``archlab`` command: run, plan, report, train, eval, ls, keys.

Examples:
  archlab run plans/quickstart.yaml                         train + eval every run, then print the report
  archlab plan plans/quickstart.yaml                        list the runs without running
  archlab run plans/quickstart.yaml train.max_steps=50      dotted overrides, Hydra style
  archlab keys train                                        every training key with its description
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from archlab._startup import end_startup
from archlab.errors import ArchlabError, Terminated

app = typer.Typer(
    help=__doc__, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None
)
console = Console()
Overrides = Annotated[list[str] | None, typer.Argument(help="dotted key=value overrides, e.g. train.max_steps=50")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", "-p", help="plan profile (e.g. smoke, full)")]
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="root of the run store", envvar="ARCHLAB_RUNS")]
StoreOpt = Annotated[str, typer.Option("--runs-dir", help="root of the run store: a path, or an fsspec URL (file://, "
                                       "memory://, s3://, gs://) staged locally and uploaded", envvar="ARCHLAB_RUNS")]
PlanArg = Annotated[Path, typer.Argument(metavar="PLAN", help="plan YAML file")]
MaxRunsOpt = Annotated[int | None, typer.Option("--max-runs", min=1, help="refuse plans that expand to more runs "
                                                 "than this (default 500: archlab.plan.expand.DEFAULT_MAX_RUNS)")]


def _load(plan_path: Path, profile: str | None, overrides: list[str] | None, max_runs: int | None = None,
          check: bool = True):
    """Load and expand a plan, say how many runs it has, then check them all (see archlab.plan.validate)."""
    from archlab.config import parse_overrides
    from archlab.plan import expand, load_plan

    plan = load_plan(plan_path)
    limit = {"max_runs": max_runs} if max_runs else {}
    specs = expand(plan, profile, parse_overrides(overrides or []), **limit)
    if check:
        from archlab.plan.validate import validate_plan

        name = profile or plan.default_profile or "default"
        console.print(f"{plan.name}: {len(specs)} run(s) (profile: {name}); checking them...", soft_wrap=True)
        validate_plan(plan, specs)
    return plan, specs


@app.command()
def run(
    plan_path: PlanArg,
    overrides: Overrides = None,
    profile: ProfileOpt = None,
    runs_dir: StoreOpt = "runs",
    only: Annotated[str | None, typer.Option(help="run only the ids containing this text")] = None,
    executor: Annotated[str, typer.Option(help="local (sequential, this process) or ray (one task per run)")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", "--address", help="Ray cluster: auto (the "
                                                    "running one), ray://host:10001, or none to start a local one")] = None,
    cpus_per_run: Annotated[float, typer.Option(help="ray: CPUs requested per run")] = 1,
    gpus_per_run: Annotated[float, typer.Option(help="ray: GPUs requested per run")] = 0,
    max_retries: Annotated[int, typer.Option(min=0, help="ray: retries of a run whose worker died (each resumes "
                                             "from the run's last checkpoint)")] = 3,
    max_runs: MaxRunsOpt = None,
    workers: Annotated[int, typer.Option(min=1, help="local: runs at once, each in its own process with "
                                         "cores/N torch threads (default 1: one after another in this process)")] = 1,
    gpus: Annotated[str | None, typer.Option(help="local: GPU indices to share out, e.g. 0,1,2,3; each run gets "
                                             "resources.gpus of them (default 1) via CUDA_VISIBLE_DEVICES")] = None,
) -> None:
    """Train and evaluate every run of a plan (skipping done ones, resuming unfinished), then report."""
    from archlab.plan import RunStore
    from archlab.plan.executor import run_ray
    from archlab.report import write_report
    from archlab.report.live import run_local_live

    plan, specs = _load(plan_path, profile, overrides, max_runs)
    store = RunStore(runs_dir, plan.name)
    chosen = [s for s in specs if only is None or only in s.id]
    if not chosen:
        raise ArchlabError(f"--only '{only}' matches none of the {len(specs)} run ids (see archlab plan {plan_path})")
    console.print(f"[bold]{plan.name}[/bold]: {len(chosen)} run(s) -> {store.where}")
    if executor == "local" and (workers > 1 or gpus is not None):
        from archlab.plan.pool import parse_gpus, run_pool

        outcomes = run_pool(chosen, store, console, workers=workers, gpus=parse_gpus(gpus))
    elif executor == "local":
        outcomes = run_local_live(chosen, store, console, f"{plan.name}: {len(chosen)} run(s)")
    elif executor == "ray":
        outcomes = run_ray(chosen, store, console, address=ray_address, num_cpus=cpus_per_run, num_gpus=gpus_per_run,
                           max_retries=max_retries)
    else:
        raise ArchlabError(f"unknown executor '{executor}'; use local or ray")
    report_path = write_report(plan, specs, store, profile or plan.default_profile, console)
    store.push("REPORT.md", "report.html", "plots")
    console.print(f"report: {report_path}")
    bad = [o for o in outcomes if o.status in ("failed", "diverged")]
    if bad:
        console.print(f"[red]{len(bad)} run(s) did not finish:[/red] " + ", ".join(f"{o.run_id} ({o.status})" for o in bad))
        raise typer.Exit(1)


@app.command("plan")
def plan_cmd(
    plan_path: PlanArg, overrides: Overrides = None, profile: ProfileOpt = None, runs_dir: StoreOpt = "runs",
    max_runs: MaxRunsOpt = None,
) -> None:
    """List the runs a plan expands to (id, labels, sections, status) after checking every one of them."""
    from archlab.plan import RunStore

    plan, specs = _load(plan_path, profile, overrides, max_runs)
    store = RunStore(runs_dir, plan.name)
    table = Table(title=f"{plan.name}: {len(specs)} runs (profile: {profile or plan.default_profile or 'default'})")
    for col in ("#", "run id", "labels", "sections", "status"):
        table.add_column(col, overflow="fold")
    for i, spec in enumerate(specs, 1):
        labels = ", ".join(f"{k}={v}" for k, v in spec.labels.items())
        table.add_row(str(i), spec.id, labels, "; ".join(spec.sections), store.run(spec.id).status()["status"])
    console.print(table)


@app.command()
def report(
    plan_path: PlanArg, overrides: Overrides = None, profile: ProfileOpt = None, runs_dir: StoreOpt = "runs",
    max_runs: MaxRunsOpt = None,
) -> None:
    """Write runs/<plan>/REPORT.md, plots/*.png and report.html from what the runs wrote."""
    from archlab.plan import RunStore
    from archlab.report import write_report

    plan, specs = _load(plan_path, profile, overrides, max_runs, check=False)
    store = RunStore(runs_dir, plan.name)
    path = write_report(plan, specs, store, profile or plan.default_profile, console)
    store.push("REPORT.md", "report.html", "plots")
    console.print(f"report: {path}")


@app.command()
def status(
    plan_path: PlanArg, overrides: Overrides = None, profile: ProfileOpt = None, runs_dir: StoreOpt = "runs",
    max_runs: MaxRunsOpt = None,
) -> None:
    """Where a plan stands, without running anything: done / failed / pending per run, with the failure line."""
    from archlab.plan import RunStore
    from archlab.report.compare import plan_status
    from archlab.report.terminal import fit_table

    plan, specs = _load(plan_path, profile, overrides, max_runs, check=False)
    rows, counts = plan_status(plan, specs, RunStore(runs_dir, plan.name))
    header = ["run", "status", "step", "last loss", plan.headline, "failure"]
    console.print(fit_table(f"{plan.name}: {len(specs)} runs", header, rows, console.width, text_columns=(0, 5)))
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())), soft_wrap=True)


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="run folder, <plan>/<run-id>, or a run-id prefix")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="the run compared with RUN_A")],
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    """The resolved-config diff of two runs and their metric deltas (B − A) with 95% intervals."""
    from archlab.report.compare import RunFiles, compare_configs, compare_metrics, resolve_run
    from archlab.report.terminal import fit_table

    a, b = (RunFiles.read(resolve_run(r, runs_dir)) for r in (run_a, run_b))
    console.print(f"A: {a.path} ({a.status.get('status', 'pending')})\nB: {b.path} ({b.status.get('status', 'pending')})",
                  soft_wrap=True)
    diff = compare_configs(a, b)
    if diff:
        console.print(fit_table("config: keys that differ", ["key", "A", "B"], diff, console.width, (0, 1, 2)))
    else:
        console.print("config: the same resolved config")
    metrics = compare_metrics(a, b)
    if metrics:
        from archlab.report.terminal import short_metric

        shortened = {short_metric(m[0]): m[0] for m in metrics if short_metric(m[0]) != m[0]}
        rows = [[short_metric(m[0]), *m[1:]] for m in metrics]
        console.print(fit_table("metrics (95% intervals; significant = intervals do not overlap)",
                                ["metric", "A", "B", "B − A", "verdict"], rows, console.width, (0, 4)))
        if shortened:
            console.print("  " + " · ".join(f"{s} = {m}" for s, m in shortened.items()), style="dim")
    else:
        console.print("metrics: the two runs share no eval yet")


@app.command()
def release(
    run: Annotated[str, typer.Argument(metavar="RUN", help="run folder, <plan>/<run-id>, or a run-id prefix; with "
                                       "--verify, the bundle folder")],
    out: Annotated[Path | None, typer.Option(help="bundle folder (default releases/<plan>-<run-id>)")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="check a bundle against its MANIFEST.sha256")] = False,
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    """Bundle a finished run (model, config, metrics, evals, samples, env, README, checksums), or verify one."""
    from archlab.report.release import build_release, verify_release

    if verify:
        problems = verify_release(Path(run))
        if problems:
            for problem in problems:
                console.print(f"[red]{problem}[/red]", soft_wrap=True)
            raise ArchlabError(f"release --verify: {run} does not match its manifest ({len(problems)} problem(s))")
        console.print(f"ok: every file of {run} matches MANIFEST.sha256", soft_wrap=True)
        return
    from archlab.report.compare import resolve_run

    folder = resolve_run(run, runs_dir)
    target = out or Path("releases") / f"{folder.parent.name}-{folder.name}"
    build_release(folder, target)
    console.print(f"release: {target} (check it with archlab release --verify {target})", soft_wrap=True)


@app.command()
def push(
    run: Annotated[str, typer.Argument(metavar="RUN", help="run folder, <plan>/<run-id>, or a run-id prefix")],
    repo_id: Annotated[str | None, typer.Option(help="hub repo id (default: the run's train.hub_model_id, else "
                                                "<your user>/<run-id>)")] = None,
    private: Annotated[bool, typer.Option(help="create the repo private")] = False,
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    """Push a finished run's model with a model card generated from its config and evals (needs the hub)."""
    from archlab.plan.hub import push_run
    from archlab.report.compare import resolve_run
    from archlab.rundir import RunDir

    folder = resolve_run(run, runs_dir)
    repo = repo_id or RunDir(folder).read_config().get("train", {}).get("hub_model_id")
    console.print(f"pushed {folder} to {push_run(folder, repo, private=private)}", soft_wrap=True)


@app.command()
def train(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="run config YAML (model/data/train/eval)")],
    overrides: Overrides = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/train/<name>-<hash>)")] = None,
) -> None:
    """Train and evaluate one run from a run config file."""
    from archlab.config import config_hash, deep_merge, load_yaml, parse_overrides
    from archlab.plan import RunConfig, RunSpec, RunStore
    from archlab.plan.executor import run_local
    from archlab.plan.validate import check_run

    data = deep_merge(load_yaml(config_path), parse_overrides(overrides or []))
    config = RunConfig.parse(data, where=str(config_path))
    check_run(config, str(config_path))
    folder = out or Path("runs") / "train" / f"{config_path.stem}-{config_hash(config.to_dict(), 6)}"
    [outcome] = run_local([RunSpec(folder.name, {}, config, ["train"])], RunStore(folder.parent, ""), console)
    console.print(f"{outcome.status}: {folder} {outcome.message}")
    if outcome.status != "done":
        raise typer.Exit(1)


@app.command("eval")
def eval_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a run folder: runs/<plan>/<run-id>")],
    evals: Annotated[str | None, typer.Option(help="comma-separated eval names (default: the run's own list)")] = None,
) -> None:
    """Run evals on a finished run folder and print their metrics."""
    from archlab.plan.runner import evaluate_run_dir

    names = [e.strip() for e in evals.split(",") if e.strip()] if evals else None
    for result in evaluate_run_dir(run_dir, names):
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in result["metrics"].items() if isinstance(v, int | float))
        console.print(f"[bold]{result['eval']}[/bold] (n={result['n']}): {metrics}")


@app.command()
def ls() -> None:
    """List what is registered: architectures, mixers, MLPs, norms, evals, schedules, embedded corpora."""
    from archlab.data.embedded import CORPORA
    from archlab.evals import EVALS
    from archlab.models import ARCHITECTURES
    from archlab.nn import MIXERS, MLPS, NORMS
    from archlab.train import SCHEDULES

    table = Table(title="archlab registry")
    for col in ("kind", "name", "what it is"):
        table.add_column(col)
    registries = (("architecture", ARCHITECTURES), ("mixer", MIXERS), ("mlp", MLPS), ("norm", NORMS),
                  ("eval", EVALS), ("schedule", SCHEDULES))
    for kind, reg in registries:
        for name in reg:
            table.add_row(kind, name, reg.describe(name))
    for corpus in CORPORA:
        table.add_row("dataset", f"embedded:{corpus}", "shipped with archlab (data/embedded/PROVENANCE.md)")
    console.print(table)


@app.command()
def keys(
    section: Annotated[str, typer.Argument(help="run | model | data | train | plan | eval")] = "run",
    name: Annotated[str | None, typer.Argument(help="the eval name for 'eval'; an architecture for 'model' "
                                                    "(its model.config keys)")] = None,
) -> None:
    """Every config key of a section with its type, default and description."""
    from archlab.data import DataConfig
    from archlab.evals import EVALS
    from archlab.models.config_check import type_label
    from archlab.models.spec import ModelConfig
    from archlab.plan import PlanConfig, RunConfig
    from archlab.train import TrainConfig

    classes = {"run": RunConfig, "model": ModelConfig, "data": DataConfig, "train": TrainConfig, "plan": PlanConfig}
    if section == "eval":
        if name is None:
            raise ArchlabError("archlab keys eval NAME: give an eval name (see archlab ls)")
        cls = EVALS.get(name).params
    elif section == "model" and name is not None:
        _arch_keys(name)
        return
    elif section in classes:
        if name is not None:
            raise ArchlabError(f"archlab keys {section} takes no name (a name goes with 'eval' or 'model')")
        cls = classes[section]
    else:
        raise ArchlabError(f"unknown section '{section}'; use one of: {', '.join([*classes, 'eval'])}")
    table = Table(title=f"{section} keys")
    for col in ("key", "type", "default", "description"):
        table.add_column(col, overflow="fold")
    for key, field in cls.model_fields.items():
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        annotation = type_label(field.annotation)
        table.add_row(key, escape(annotation), escape(default[:40]), escape(field.description or ""))
    console.print(table)


def _arch_keys(arch: str) -> None:
    """The ``model.config`` keys of one architecture, from its config class's signature."""
    from archlab.models.config_check import config_key_rows
    from archlab.models.registry import ARCHITECTURES

    config_class = ARCHITECTURES.get(arch).config_class
    table = Table(title=f"model.config keys of '{arch}' ({config_class.__name__})")
    for col in ("key", "type", "default"):
        table.add_column(col, overflow="fold")
    for row in config_key_rows(config_class):
        table.add_row(*(escape(cell[:60]) for cell in row))
    console.print(table)


def _quiet_libraries() -> None:
    """archlab draws its own progress bars; the libraries' per-file bars and notices would bury them."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _click_exceptions():
    """The exceptions module of the click that typer runs on (typer >= 0.29 bundles its own copy, whose
    UsageError is not ``click.UsageError``); typer.Exit and typer.Abort are typer's own either way."""
    group_base = typer.core.TyperGroup.__mro__[1]
    return importlib.import_module(group_base.__module__.rpartition(".")[0] + ".exceptions")


_received: list[int] = []  # typer turns any KeyboardInterrupt into Exit(130); this says it was SIGTERM


def _on_sigterm(signum, frame) -> None:
    _received.append(signum)
    raise Terminated()


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _fail(message: str, code: int = 2) -> None:
    console.print(Text.assemble(("error: ", "red"), _one_line(message)), soft_wrap=True)
    sys.exit(code)


def main() -> None:
    """Run the CLI: bad input is one line and exit code 2; Ctrl-C is 130 and SIGTERM 143, runs resumable."""
    end_startup()
    exceptions = _click_exceptions()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main_thread else None
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    _received.clear()
    code: int | None = 0
    try:
        _quiet_libraries()
        code = app(standalone_mode=False)
    except ArchlabError as exc:
        _fail(str(exc))
    except typer.Exit as exc:  # typer turns Ctrl-C into Exit(130)
        code = exc.exit_code
    except exceptions.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "archlab"
        _fail(f"{exc.format_message()} (see {where} --help)", 2)
    except exceptions.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except RecursionError:
        _fail("the input is nested too deeply to process")
    finally:
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)
    if code == 130 and _received:
        code = 143
    if code in (130, 143):
        how = "terminated (SIGTERM)" if code == 143 else "interrupted"
        console.print(f"{how}: finished runs and checkpoints are kept; run the same command again to resume",
                      soft_wrap=True)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
