"""One run end to end: data -> model -> train -> evals, recorded in its run folder.

Failures are recorded, not raised: a bad run is marked failed/diverged with a one-line message and the
executor moves on; Ctrl-C leaves the run resumable (status pending, last checkpoint kept).
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass
from pathlib import Path

from accelerate.utils import set_seed
from transformers import AutoModelForCausalLM

from archlab.data import build_data
from archlab.errors import ArchlabError
from archlab.evals import EvalContext, run_eval
from archlab.graft import apply_graft
from archlab.models.spec import build_model
from archlab.plan.schema import RunConfig
from archlab.plan.store import RunDir, atomic_write, environment, try_lock
from archlab.train import Callback, Diverged, Trainer
from archlab.train.checkpoint import load_latest
from archlab.train.schedules import set_model_attribute

MODEL_DIR = "model"


@dataclass
class Outcome:
    run_id: str
    status: str
    message: str = ""


def run_one(config: RunConfig, run: RunDir, callbacks: list[Callback] | None = None) -> Outcome:
    lock = try_lock(run)
    if lock is None:
        return Outcome(run.id, "running", "locked by another executor; skipped")
    try:
        return _run_locked(config, run, callbacks or [])
    finally:
        lock.release()


def _run_locked(config: RunConfig, run: RunDir, callbacks: list[Callback]) -> Outcome:
    if run.status().get("status") == "done":
        return Outcome(run.id, "done", "already done")
    run.write_config(config.to_dict())
    atomic_write(run.path / "env.json", json.dumps(environment(), indent=1))
    run.set_status("running")
    trainer = None
    try:
        set_seed(config.train.seed)
        data = build_data(config.data)
        model = build_model(config.model, vocab_size=len(data.tokenizer))
        if config.graft is not None:
            model = apply_graft(model, config.graft)
        # frozen weights of a pretrained base are re-read from its files, so checkpoints skip them
        trainer = Trainer(model, data, config.train, run.path, callbacks=callbacks,
                          checkpoint_frozen=config.model.pretrained is None, eval_values=config.eval_values())
        state = trainer.fit()
        model = set_eval_values(trainer.unwrapped, config)
        if exports_model(config):
            model.save_pretrained(run.path / MODEL_DIR)
            data.tokenizer.save_pretrained(run.path / MODEL_DIR)
        ctx = EvalContext(model, data.tokenizer, data, run.path, seed=config.train.seed,
                          batch_size=config.train.per_device_eval_batch_size)
        for spec in config.eval:
            run_eval(spec, ctx)
    except KeyboardInterrupt:
        step = trainer.state.step if trainer else 0
        run.set_status("pending", step=step, message=f"interrupted at step {step}; run again to resume")
        raise
    except Diverged as exc:
        run.set_status("diverged", step=trainer.state.step if trainer else 0, message=str(exc))
        return Outcome(run.id, "diverged", str(exc))
    except ArchlabError as exc:
        run.set_status("failed", message=str(exc))
        return Outcome(run.id, "failed", str(exc))
    except Exception as exc:  # record anything else with its traceback, keep the other runs going
        (run.path / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        message = f"{type(exc).__name__}: {exc} (traceback in {run.path / 'error.log'})"
        run.set_status("failed", message=message)
        return Outcome(run.id, "failed", message)
    run.set_status("done", step=state.step, stop_reason=state.stop_reason, skipped_steps=state.skipped_steps,
                   oom_backoffs=state.oom_backoffs)
    return Outcome(run.id, "done", state.stop_reason)


def exports_model(config: RunConfig) -> bool:
    """From-scratch models are exported with save_pretrained; a pretrained or grafted model is not copied
    whole: its run keeps the trained tensors in checkpoints/ and is rebuilt from config.yaml."""
    return config.model.pretrained is None and config.model.hf_config is None and config.graft is None


def load_trained_model(run: RunDir, config: RunConfig, vocab_size: int):
    if (run.path / MODEL_DIR).exists():
        return set_eval_values(AutoModelForCausalLM.from_pretrained(run.path / MODEL_DIR), config)
    set_seed(config.train.seed)
    model = build_model(config.model, vocab_size=vocab_size)
    if config.graft is not None:
        model = apply_graft(model, config.graft)
    if load_latest(run.path / "checkpoints", model) is None:
        raise ArchlabError(f"{run.path} has no checkpoint to evaluate (status: {run.status().get('status')})")
    return set_eval_values(model, config)


def set_eval_values(model, config: RunConfig):
    """Scheduled attributes (a graft's mu, ...) at the values the run's config records for evaluation."""
    for name, value in config.eval_values().items():
        set_model_attribute(model, name, value)
    return model


def evaluate_run_dir(run_dir: Path, names: list[str] | None = None) -> list[dict]:
    """Re-run evals on a finished run folder (its config.yaml and exported model)."""
    run = RunDir(run_dir)
    if not (run.path / "config.yaml").exists():
        raise ArchlabError(f"{run_dir} is not a run folder (no config.yaml); pass runs/<plan>/<run-id>")
    config = RunConfig.parse(run.read_config(), where=str(run_dir / "config.yaml"))
    from archlab.evals import EvalSpec

    configured = {spec.name: spec for spec in config.eval}
    # an eval named on the command line keeps the parameters the run's config gives it
    specs = config.eval if not names else [configured.get(n) or EvalSpec.model_validate(n) for n in names]
    data = build_data(config.data)
    model = load_trained_model(run, config, len(data.tokenizer))
    ctx = EvalContext(model, data.tokenizer, data, run.path, seed=config.train.seed,
                      batch_size=config.train.per_device_eval_batch_size)
    return [run_eval(spec, ctx) for spec in specs]
