"""One run end to end: data -> model -> train -> evals, recorded in its run folder.

Failures are recorded, not raised: a bad run is marked failed/diverged with a one-line message and the
executor moves on; Ctrl-C or SIGTERM leaves the run resumable (status pending, last checkpoint kept).

Under ``torchrun`` / ``accelerate launch`` every rank calls ``run_one``: rank 0 owns the run folder (lock,
status, checkpoints, evals, export), the other ranks train alongside it and write nothing. A rank that
dies takes the step's collective down with it: rank 0 records ``failed`` in one line (or is terminated by
the launcher, recorded the same way) and the next start resumes from the last checkpoint, with the same
or another world size.
"""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from transformers import AutoModelForCausalLM

from archlab.config import deep_merge, expand_dotted
from archlab.data import build_data
from archlab.errors import ArchlabError, Terminated, first_line
from archlab.evals import run_eval
from archlab.files import disk_full
from archlab.plan.build import build_run_model, eval_context
from archlab.plan.schema import RunConfig
from archlab.plan.store import RunDir, environment, try_lock
from archlab.train import Callback, Diverged, Trainer
from archlab.train.checkpoint import load_latest, remove_partial_saves
from archlab.train.distributed import lost_peer, place
from archlab.train.schedules import set_model_attribute


@dataclass
class Outcome:
    run_id: str
    status: str
    message: str = ""


def run_one(config: RunConfig, run: RunDir, callbacks: list[Callback] | None = None) -> Outcome:
    if not place().is_main:
        return _run_follower(config, run, callbacks or [])
    lock = try_lock(run)
    if lock is None:
        return Outcome(run.id, "running", "locked by another executor; skipped")
    try:
        return _run_locked(config, run, callbacks or [])
    finally:
        lock.release()


class FallbackNotes(Callback):
    """Records a resume that had to skip an unusable checkpoint, so the run's status and the report say so."""

    def __init__(self):
        self.notes: list[str] = []

    def on_event(self, trainer, message: str) -> None:
        if "corrupt or unusable" in message or "no usable checkpoint" in message:
            self.notes.append(message)
        elif message.startswith("resumed from") and self.notes:
            self.notes.append(message)


def _run_locked(config: RunConfig, run: RunDir, callbacks: list[Callback]) -> Outcome:
    if run.is_done():
        return Outcome(run.id, "done", "already done")
    fallback = FallbackNotes()
    callbacks = [*callbacks, fallback]
    remove_partial_saves(run.checkpoints)  # left by a kill during a save; we hold the run's lock
    run.write_config(config.to_dict())
    run.write_env(environment())
    run.set_status("running")
    trainer = None
    try:
        config = resolve_needs(config, run)
        with run.heartbeat():
            data = build_data(config.data)
            # frozen weights of a pretrained base are re-read from its files, so checkpoints skip them
            trainer = Trainer(build_run_model(config, len(data.tokenizer)), data, config.train, run.path,
                              callbacks=callbacks, checkpoint_frozen=config.model.pretrained is None,
                              eval_values=config.eval_values())
            state = trainer.fit()
            model = set_eval_values(trainer.trained_model(lambda: build_run_model(config, len(data.tokenizer))), config)
            if exports_model(config):
                model.save_pretrained(run.model_dir)
                data.tokenizer.save_pretrained(run.model_dir)
            ctx = eval_context(model, data, run, config)
            for spec in config.eval:
                run_eval(spec, ctx)
    except KeyboardInterrupt as exc:
        step = trainer.state.step if trainer else 0
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        if place().distributed and isinstance(exc, Terminated):  # the launcher stops every rank when one fails
            _final_status(run, "failed", step=step, message=f"rank 0 {how} at step {step} (torchrun stops all "
                          f"ranks when one fails); run again to resume from the last checkpoint")
            raise
        _final_status(run, "pending", step=step, message=f"{how} at step {step}; run again to resume")
        raise
    except Diverged as exc:
        return _final_status(run, "diverged", step=trainer.state.step if trainer else 0, message=str(exc))
    except ArchlabError as exc:
        return _final_status(run, "failed", message=str(exc))
    except Exception as exc:  # record anything else with its traceback, keep the other runs going
        if disk_full(exc):
            return _final_status(run, "failed", message=f"disk full: no space left on the device holding "
                                 f"{run.path} ({exc.filename or exc}); free space and run again to resume")
        if place().distributed and lost_peer(exc):
            step = trainer.state.step if trainer else 0
            return _final_status(run, "failed", step=step, message=f"a data-parallel rank was lost at step {step} "
                                 f"({first_line(exc)}); run again to resume from the last checkpoint")
        where = f"traceback in {run.error_log}" if run.record_error(traceback.format_exc()) \
            else "the traceback could not be written"
        return _final_status(run, "failed", message=f"{type(exc).__name__}: {exc} ({where})")
    notes = {"checkpoint_fallback": fallback.notes} if fallback.notes else {}
    message = "; ".join(filter(None, [state.stop_reason, *fallback.notes]))
    outcome = _final_status(run, "done", step=state.step, message=message, stop_reason=state.stop_reason,
                            skipped_steps=state.skipped_steps, oom_backoffs=state.oom_backoffs, **notes,
                            **({"best_step": state.best_step, "best_metric": state.best_metric}
                               if config.train.load_best_model_at_end and state.best_step else {}))
    return _push(config, run, outcome) if config.train.push_to_hub else outcome


def _push(config: RunConfig, run: RunDir, outcome: Outcome) -> Outcome:
    """train.push_to_hub: push the finished run; a failed push (offline) is one line and the run stays done."""
    from archlab.plan.hub import push_run

    try:
        note = f"pushed to {push_run(run.path, config.train.hub_model_id)}"
    except ArchlabError as exc:
        note = str(exc)
    record = {k: v for k, v in run.status().items() if k not in ("status", "updated")}
    with contextlib.suppress(OSError):
        run.set_status("done", **{**record, "push": note})
    return Outcome(outcome.run_id, "done", f"{outcome.message}; {note}" if outcome.message else note)


def _run_follower(config: RunConfig, run: RunDir, callbacks: list[Callback]) -> Outcome:
    """A rank other than 0: train in step with rank 0 (which resumes, checkpoints and evaluates); write nothing."""
    try:
        data = build_data(config.data)
        trainer = Trainer(build_run_model(config, len(data.tokenizer)), data, config.train, run.path,
                          callbacks=callbacks, checkpoint_frozen=config.model.pretrained is None,
                          eval_values=config.eval_values())
        state = trainer.fit()
    except (Diverged, ArchlabError) as exc:
        return Outcome(run.id, "failed", str(exc))
    except Exception as exc:
        return Outcome(run.id, "failed", f"rank {place().rank}: {type(exc).__name__}: {first_line(exc)}")
    return Outcome(run.id, "done", f"rank {place().rank} trained {state.step} steps")


def resolve_needs(config: RunConfig, run: RunDir) -> RunConfig:
    """The config with every ``needs`` key set to the exported model folder of the run it names.

    Raises:
        ArchlabError: (one line) when a needed run is not done or exported no model.
    """
    if not config.needs:
        return config
    data = config.to_dict()
    for key, run_id in config.needs.items():
        dep = RunDir(run.path.parent / run_id)
        if not dep.is_done():
            record = dep.status()
            why = f": {record['message']}" if record.get("message") else ""
            raise ArchlabError(f"needs run {run_id} (for {key}), which is {record.get('status', 'pending')}{why}")
        if not dep.model_dir.is_dir():
            raise ArchlabError(f"needs run {run_id} (for {key}), which exported no model folder ({dep.model_dir})")
        data = deep_merge(data, expand_dotted({key: str(dep.model_dir.resolve())}))
    return RunConfig.parse(data, where=f"{run.path.name} (needs)")


def _final_status(run: RunDir, status: str, message: str = "", **extra) -> Outcome:
    with contextlib.suppress(OSError):  # a full disk must not hide the reason behind a second traceback
        run.set_status(status, message=message, **extra)
    return Outcome(run.id, status, message)


def exports_model(config: RunConfig) -> bool:
    """From-scratch models are exported with save_pretrained; a pretrained or grafted model is not copied
    whole: its run keeps the trained tensors in checkpoints/ and is rebuilt from config.yaml."""
    return config.model.pretrained is None and config.model.hf_config is None and config.graft is None


def load_trained_model(run: RunDir, config: RunConfig, vocab_size: int):
    if run.model_dir.exists():
        try:
            model = AutoModelForCausalLM.from_pretrained(run.model_dir)
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:  # a truncated or hand-edited export
            raise ArchlabError(f"{run.model_dir} cannot be loaded ({first_line(exc)}); the export is damaged: "
                               f"delete that folder and re-run the run (or restore the folder)") from None
        return set_eval_values(model, config)
    model = build_run_model(config, vocab_size)
    restored = load_latest(run.checkpoints, model, include_frozen=config.model.pretrained is None,
                           trainer_state=False)
    if restored is None:
        raise ArchlabError(f"{run.path} has no usable checkpoint to evaluate (status: {run.status().get('status')})")
    return set_eval_values(model, config)


def set_eval_values(model, config: RunConfig):
    """Scheduled attributes (a graft's mu, ...) at the values the run's config records for evaluation."""
    for name, value in config.eval_values().items():
        set_model_attribute(model, name, value)
    return model


def evaluate_run_dir(run_dir: Path, names: list[str] | None = None) -> list[dict]:
    """Re-run evals on a finished run folder (its config.yaml and exported model)."""
    run = RunDir(run_dir)
    if not run.has_config():
        raise ArchlabError(f"{run_dir} is not a run folder (no config.yaml); pass runs/<plan>/<run-id>")
    config = RunConfig.parse(run.read_config(), where=str(run.path / RunDir.CONFIG))
    from archlab.evals import EvalSpec

    configured = {spec.name: spec for spec in config.eval}
    # an eval named on the command line keeps the parameters the run's config gives it
    specs = config.eval if not names else [configured.get(n) or EvalSpec.model_validate(n) for n in names]
    data = build_data(config.data)
    ctx = eval_context(load_trained_model(run, config, len(data.tokenizer)), data, run, config)
    return [run_eval(spec, ctx) for spec in specs]
