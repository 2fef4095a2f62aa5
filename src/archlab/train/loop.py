"""The lean training loop on accelerate.

What accelerate does: device placement, autocast, loss scaling, DDP. What this loop adds: exact resume
(weights, optimizer, LR scheduler, RNG, data position), parameter schedules, NaN/Inf policy, CUDA OOM
back-off (halve the micro-batch, double accumulation, same examples), checksummed checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from torch import nn
from transformers import get_scheduler

from archlab.data import DataBundle, EpochSampler
from archlab.errors import ArchlabError, did_you_mean
from archlab.hardware import PRECISION_DTYPES, device_name, matmul_peak_flops
from archlab.models.flops import training_flops_per_token
from archlab.models.masked_diffusion import (
    MaskedTotals,
    masked_diffusion_loss_sum,
    row_seed,
    score_masked_batch,
)
from archlab.models.scoring import LossTotals, score_batch
from archlab.rundir import RunDir
from archlab.train import best, fsdp
from archlab.train import checkpoint as ckpt
from archlab.train.acceleration import (
    CompileDecision,
    accelerate_precision,
    compile_scope,
    remember_compile_seconds,
    resolve_precision,
)
from archlab.train.callbacks import Callback
from archlab.train.config import TrainConfig
from archlab.train.distributed import NoMetrics, cpu_ddp_if_no_accelerator
from archlab.train.objectives import causal_lm_sum, scored_tokens, token_weight
from archlab.train.optim import build_optimizer
from archlab.train.schedules import TRAINER_ATTRIBUTES, build_schedule, evaluation_values, set_model_attribute
from archlab.train.trackers import tracker_init_kwargs, tracker_project_dir

VALIDATION_MASK_SEED = 0  # masked-diffusion validation: the same masks at every evaluation


class Diverged(Exception):
    """Loss or gradients became NaN/Inf and the policy says stop."""


@dataclass
class TrainState:
    total_steps: int
    micro_batch_size: int
    accumulation: int
    step: int = 0
    position: int = 0
    tokens_seen: int = 0
    skipped_steps: int = 0
    consecutive_skips: int = 0
    oom_backoffs: int = 0
    best_eval_loss: float = math.inf
    evals_without_improvement: int = 0
    stop_reason: str = ""
    best_step: int = 0  # load_best_model_at_end: the step of the best evaluation (0: none yet)
    best_metric: float = math.inf
    schedule_values: dict[str, float] = field(default_factory=dict)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        data: DataBundle,
        cfg: TrainConfig,
        run_dir: Path,
        callbacks: list[Callback] | tuple[Callback, ...] = (),
        accelerator: Accelerator | None = None,
        checkpoint_frozen: bool = True,
        eval_values: dict[str, float] | None = None,
    ):
        self.cfg, self.data, self.run_dir = cfg, data, Path(run_dir)
        self.checkpoint_frozen = checkpoint_frozen
        self.eval_values = dict(eval_values or {})  # scheduled attributes as evaluation sets them (e.g. mag_weight)
        self.callbacks = list(callbacks)
        check_trackers(cfg.report_to)
        if accelerator is None:
            process = PartialState(cpu=cpu_ddp_if_no_accelerator())  # the process group, before any Accelerator
            self.precision = resolve_precision(cfg.bf16, cfg.fp16, process.device)
            _release_precision(accelerate_precision(self.precision))
            accelerator = Accelerator(mixed_precision=accelerate_precision(self.precision),
                                      log_with=cfg.report_to or None,
                                      project_dir=tracker_project_dir(cfg.report_to, self.run_dir))
        else:
            self.precision = {"bf16": "bf16", "fp16": "fp16"}.get(str(accelerator.mixed_precision), "fp32")
        self.accelerator = accelerator
        run = RunDir(self.run_dir)
        self.run = run
        self.metrics, self.checkpoint_dir = run.metrics, run.checkpoints
        if not self.accelerator.is_main_process:  # rank 0 owns the run folder; other ranks log nothing
            self.metrics = NoMetrics()
        apply_trainable(model, cfg.trainable)
        if cfg.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable()
        self.sampler = EpochSampler(
            len(data.train),
            cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps,
            cfg.seed,
            rank=self.accelerator.process_index,
            world_size=self.accelerator.num_processes,
        )
        self.schedules = {name: build_schedule(spec, self.sampler.batches_per_epoch)
                          for name, spec in cfg.schedules.items()}
        for name in self.schedules:
            if name in TRAINER_ATTRIBUTES:
                continue  # e.g. max_grad_norm: the loop reads it from state.schedule_values
            if set_model_attribute(model, name, self.schedules[name](0)) == 0:
                raise ArchlabError(
                    f"train.schedules targets '{name}', but no module of this model declares it "
                    f"(scheduled_attributes); check the key or the model/graft settings"
                )
        if not any(bool((labels[1:] != -100).any()) for labels in data.train.labels):
            raise ArchlabError("no training example has a token to score (every label is -100); check "
                               "data.mask_prompt and the data's completions")
        total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * self.sampler.batches_per_epoch)
        self.state = TrainState(total, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps)
        self.mask_token_id = _mask_token_id(data, cfg.objective)
        self._last_grad_norm = 0.0
        # FSDP shards the parameters in place; the optimizer must be built on the shards
        self.sharded = bool(cfg.fsdp) and self.accelerator.num_processes > 1
        self._notes: list[str] = []
        if self.sharded:
            units = fsdp.shard(model, cfg.fsdp, cfg.fsdp_config.transformer_layer_cls_to_wrap, self.accelerator.device)
            self._notes.append(f"fsdp: parameters sharded over {self.accelerator.num_processes} ranks in {units} "
                               f"units ({' '.join(cfg.fsdp)})")
        elif cfg.fsdp:
            self._notes.append("fsdp: one process, nothing to shard; training unsharded")
        optimizer = build_optimizer(model, cfg)
        warmup = cfg.warmup_steps or int(round(cfg.warmup_ratio * total))
        self.scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup,
                                       num_training_steps=total)
        if self.sharded:  # fully_shard did what accelerate's DDP wrapper would; only the optimizer is wrapped
            self.model, self.optimizer = model, self.accelerator.prepare(optimizer)
        else:
            self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
            # the loop autocasts its own forwards; accelerate's forward wrapper would also copy every output to
            # fp32, the vocabulary-sized logits included, which the loss (computed in fp32 inside the model)
            # never reads: a wasted pass over the largest tensor of a small model's step
            self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
        self.compile = CompileDecision(False if self.sharded else cfg.torch_compile, total,
                                       self.accelerator.device.type,
                                       model_opts_out=getattr(model, "compile_auto_opt_out", "") or "")
        self.compiled = False
        self._compiled_step_seconds: list[float] = []
        self._compile_logged = False
        self.flops_per_token: float | None = None
        self.peak_flops: float | None = None
        self.train_seconds = 0.0
        if cfg.report_to:
            self.accelerator.init_trackers(
                self.run_dir.parent.name or "archlab",
                config={k: v for k, v in cfg.to_dict().items() if isinstance(v, int | float | str | bool)},
                init_kwargs=tracker_init_kwargs(cfg.report_to, self.run_dir),
            )

    # ----------------------------------------------------------------------------------------- state
    def _trainer_state(self, optimizer_state: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "state": asdict(self.state),
            "optimizer": self.optimizer.state_dict() if optimizer_state is None else optimizer_state,
            "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.rng_state(),
        }

    def _resume(self) -> None:
        load = (lambda tensors: fsdp.load_full_model_state(self.unwrapped, tensors)) if self.sharded else None
        restored = ckpt.load_latest(self.checkpoint_dir, self.unwrapped, warn=self._warn,
                                    include_frozen=self.checkpoint_frozen, load=load)
        if restored is None:
            if ckpt.list_checkpoints(self.checkpoint_dir):
                self._warn("no usable checkpoint: training starts again from step 0")
            self.metrics.truncate_after(0)  # a fresh start must not log its steps a second time
            return
        saved = restored.trainer_state
        fsdp.load_optimizer_state(self.unwrapped, self.optimizer.optimizer, saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = TrainState(**{**saved["state"], "total_steps": self.state.total_steps})
        ckpt.set_rng_state(saved["rng"])
        self.metrics.truncate_after(self.state.step)
        self._warn(f"resumed from {restored.path.name} (step {self.state.step})")

    def save(self) -> Path | None:
        if self.sharded:
            return self._save_sharded()
        if not ckpt.all_finite(self.unwrapped):
            self._warn(f"not checkpointing step {self.state.step}: weights contain NaN/Inf")
            return None
        if not self.accelerator.is_main_process:
            return None
        return ckpt.save_checkpoint(
            self.checkpoint_dir, self.state.step, self.unwrapped, self._trainer_state(), self.cfg.save_total_limit,
            include_frozen=self.checkpoint_frozen,
        )

    def _save_sharded(self) -> Path | None:
        """Every rank gathers (a collective); rank 0 writes the full state as a DDP run would."""
        tensors = fsdp.full_model_state(self.unwrapped)
        optimizer_state = fsdp.full_optimizer_state(self.unwrapped, self.optimizer.optimizer)
        if not self.accelerator.is_main_process:
            return None
        names = ckpt.checkpoint_names(self.unwrapped, self.checkpoint_frozen)
        tensors = {name: tensors[name] for name in names}
        if not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
            self._warn(f"not checkpointing step {self.state.step}: weights contain NaN/Inf")
            return None
        return ckpt.save_checkpoint(self.checkpoint_dir, self.state.step, self.unwrapped,
                                    self._trainer_state(optimizer_state), self.cfg.save_total_limit,
                                    include_frozen=self.checkpoint_frozen, tensors=tensors)

    def trained_model(self, build) -> nn.Module | None:
        """The trained model as a plain module for evaluation and export: under FSDP, after ``fit``, rank 0 gets
        ``build()`` loaded with the weights gathered at the end of training, other ranks None."""
        if not self.sharded:
            return self.unwrapped
        if not self.accelerator.is_main_process:
            return None
        plain = build().to(self.accelerator.device)
        plain.load_state_dict(self._gathered)
        return plain

    @property
    def unwrapped(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)  # plain names: no _orig_mod.

    def _warn(self, message: str) -> None:
        self.metrics.append({"step": self.state.step, "event": message})
        self._emit("on_event", message)

    def _emit(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    # ------------------------------------------------------------------------------------------ loop
    def fit(self, resume: bool = True) -> TrainState:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self._resume()
        for note in self._notes:
            self._warn(note)
        self._measure_flops()
        if self.compile.decided:
            self._compile_model()
        self._emit("on_train_begin")
        window = {"loss": 0.0, "steps": 0, "tokens": 0, "start": time.perf_counter(), "grad_norm": 0.0}
        while self.state.step < self.state.total_steps and not self.state.stop_reason:
            for name, schedule in self.schedules.items():
                value = schedule(self.state.step)
                set_model_attribute(self.unwrapped, name, value)
                self.state.schedule_values[name] = value
            self._emit("on_step_begin")
            indices = self.sampler.indices(self.state.position)
            started = time.perf_counter()
            loss, n_tokens = self._optimizer_step(indices)
            self._after_step(time.perf_counter() - started)
            self.state.position += 1
            if loss is None:
                continue
            self.state.step += 1
            self.state.tokens_seen += n_tokens
            window["loss"] += loss
            window["steps"] += 1
            window["tokens"] += n_tokens
            window["grad_norm"] = self._last_grad_norm
            self._emit("on_step_end")
            if self.state.step % self.cfg.logging_steps == 0 or self.state.step == self.state.total_steps:
                self._log_window(window)
            if self.cfg.eval_steps and self.state.step % self.cfg.eval_steps == 0:
                self.evaluate()
            if self.cfg.save_steps and self.state.step % self.cfg.save_steps == 0:
                self.save()
        self._log_compile_time()
        self._write_summary()
        if not self.cfg.eval_steps or self.state.step % self.cfg.eval_steps:
            self.evaluate()
        self.save()
        if self.cfg.load_best_model_at_end:
            self._load_best()
        self._emit("on_train_end")
        if self.sharded:  # gathered while the process group lives (end_training destroys it)
            self._gathered = fsdp.full_model_state(self.unwrapped)
        self.accelerator.end_training()
        return self.state

    def _optimizer_step(self, indices: list[int]) -> tuple[float | None, int]:
        """One optimizer step over ``indices``; returns (mean loss, tokens) or (None, 0) if skipped."""
        while True:
            try:
                return self._accumulate_and_step(indices)
            except Exception as exc:
                if not is_oom(exc) or self.state.micro_batch_size == 1:
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.state.micro_batch_size //= 2
                self.state.accumulation *= 2
                self.state.oom_backoffs += 1
                self._warn(
                    f"out of memory: micro-batch halved to {self.state.micro_batch_size}, accumulation doubled to "
                    f"{self.state.accumulation} (same effective batch)"
                )

    def _accumulate_and_step(self, indices: list[int]) -> tuple[float | None, int]:
        size = self.state.micro_batch_size
        chunks = [indices[i : i + size] for i in range(0, len(indices), size)]
        micro = [self.data.batch(self.data.train, chunk) for chunk in chunks]
        counts = [scored_tokens(b) for b in micro]
        global_tokens = int(self._sum_over_ranks(sum(counts)))
        if global_tokens == 0:
            self._warn(f"step {self.state.step + 1}: no scored token in its examples (every label -100); skipped")
            return None, 0
        weight = token_weight(global_tokens, self.accelerator.num_processes)
        distributed = self.accelerator.num_processes > 1
        self.model.train()
        summed = 0.0
        for i, (batch, tokens, chunk) in enumerate(zip(micro, counts, chunks, strict=True)):
            sync = i == len(micro) - 1
            if tokens == 0 and not (sync and distributed):
                continue  # nothing scored (e.g. a fully masked prompt); a rank's last one still joins the all-reduce
            if self.compiled and "attention_mask" in batch and bool(batch["attention_mask"].all()):
                batch = {k: v for k, v in batch.items() if k != "attention_mask"}  # SDPA's causal path, no mask
            batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
            ctx = self.accelerator.no_sync(self.model) if not sync else contextlib.nullcontext()
            scope = compile_scope() if self.compiled else contextlib.nullcontext()
            with ctx:
                with self.accelerator.autocast(), scope:
                    if self.mask_token_id is None:
                        loss = causal_lm_sum(self.model, batch, tokens)
                    else:  # masks seeded per example and data position: independent of batching, exact on resume
                        seeds = [row_seed(self.cfg.seed, self.state.position, j) for j in chunk]
                        loss = masked_diffusion_loss_sum(self.model, batch, self.mask_token_id, seeds)
                # autocast covers the forward only (PyTorch's advice): the backward runs each op in the dtype
                # its forward chose, and an op that kept fp32 on purpose (the delta rule) is not recast
                self.accelerator.backward(loss * weight)
            summed += float(loss.detach())
        loss_sum = self._sum_over_ranks(summed) / global_tokens
        grad_norm = float("nan")
        if math.isfinite(loss_sum):
            max_norm = self.state.schedule_values.get("max_grad_norm", self.cfg.max_grad_norm)  # staged clipping
            if self.sharded:  # DTensor gradients: torch's clip computes the norm over every rank's shards
                self.accelerator.unscale_gradients()
                grad_norm = fsdp.local_value(torch.nn.utils.clip_grad_norm_(
                    self.model.parameters(), max_norm if max_norm > 0 else math.inf))
            elif max_norm > 0:
                grad_norm = float(self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm))
            else:
                grad_norm = _grad_norm(self.model)
        if math.isfinite(loss_sum) and not math.isfinite(grad_norm) and self.accelerator.scaler is not None:
            # fp16 overflow: the loss scaler skips this update and lowers its scale; not a divergence
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self._warn(f"fp16 gradient overflow at step {self.state.step + 1}: update skipped, loss scale lowered")
            return None, 0
        if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return self._non_finite(loss_sum)
        self.state.consecutive_skips = 0
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._last_grad_norm = grad_norm
        return loss_sum, global_tokens

    def _sum_over_ranks(self, value: float) -> float:
        if self.accelerator.num_processes == 1:
            return value
        total = torch.tensor(value, dtype=torch.float64, device=self.accelerator.device)
        return float(self.accelerator.reduce(total, reduction="sum"))

    def _non_finite(self, loss: float) -> tuple[None, int]:
        what = f"loss became {loss}" if not math.isfinite(loss) else "gradient norm became non-finite"
        if self.cfg.nan_policy == "stop":
            raise Diverged(
                f"{what} at step {self.state.step + 1}; lower train.learning_rate, or set train.nan_policy=skip"
            )
        self.state.skipped_steps += 1
        self.state.consecutive_skips += 1
        self._warn(f"{what} at step {self.state.step + 1}: step skipped ({self.state.skipped_steps} so far)")
        if self.state.consecutive_skips >= self.cfg.max_skipped_steps:
            raise Diverged(f"{what} for {self.state.consecutive_skips} steps in a row; lower train.learning_rate")
        return None, 0

    def _log_window(self, window: dict[str, Any]) -> None:
        elapsed = max(time.perf_counter() - window["start"], 1e-9)
        record = {
            "step": self.state.step,
            "epoch": round(self.sampler.epoch_of(self.state.position), 4),
            "loss": window["loss"] / max(window["steps"], 1),
            "learning_rate": self.scheduler.get_last_lr()[0],
            "grad_norm": window["grad_norm"],
            "tokens_per_second": window["tokens"] / elapsed,
            "peak_memory_mb": round(peak_memory_mb(self.accelerator.device), 1),
            "tokens_seen": self.state.tokens_seen,
            **self._flops_record(window["tokens"] / elapsed),
            **{f"schedule/{k}": v for k, v in self.state.schedule_values.items()},
        }
        if self.state.skipped_steps:
            record["skipped_steps"] = self.state.skipped_steps
        telemetry = getattr(self.unwrapped, "inner_telemetry", None)
        if callable(telemetry):  # test-time-learning models (HOPE): gate hits and fast writes of this window
            record.update(telemetry(reset=True))
        self.metrics.append(record)
        self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=self.state.step)
        self._emit("on_log", record)
        window.update(loss=0.0, steps=0, tokens=0, start=time.perf_counter())

    # ------------------------------------------------------------------------------- speed & compile
    def _measure_flops(self) -> None:
        """FLOPs per training token (counted once from the model) and the machine's measured matmul peak."""
        seq_len = max(len(x) for x in self.data.train.input_ids[:256])
        try:
            self.flops_per_token = training_flops_per_token(self.unwrapped, seq_len, device=self.accelerator.device)
            self.peak_flops = matmul_peak_flops(self.accelerator.device, PRECISION_DTYPES[self.precision])
        except Exception as exc:  # informational only: a model the counter cannot run still trains
            self._warn(f"FLOPs not counted ({type(exc).__name__}: {exc}); no MFU in this run's logs")
        parallel = "fsdp" if self.sharded else "ddp" if self.accelerator.num_processes > 1 else "none"
        if not self.accelerator.is_main_process:
            return  # rank 0 owns the run folder
        self.run.update_env({"precision": self.precision, "torch_compile": self.cfg.torch_compile,
                             "processes": self.accelerator.num_processes, "data_parallel": parallel,
                             "matmul_peak_flops": self.peak_flops, "peak_device": device_name(self.accelerator.device)})

    def _flops_record(self, tokens_per_second: float) -> dict[str, float]:
        if not self.flops_per_token:
            return {}
        achieved = self.flops_per_token * tokens_per_second
        if self.peak_flops and achieved > self.peak_flops:  # a peak cached on a busy machine: measure again
            self.peak_flops = matmul_peak_flops(self.accelerator.device, PRECISION_DTYPES[self.precision],
                                                at_least=achieved)
        out = {"flops_per_second": achieved}
        if self.peak_flops:
            out["mfu"] = achieved / self.peak_flops
        return out

    def _after_step(self, seconds: float) -> None:
        self.train_seconds += seconds
        if self.compiled:
            if len(self._compiled_step_seconds) < 4:
                self._compiled_step_seconds.append(seconds)
                if len(self._compiled_step_seconds) == 4:
                    self._log_compile_time()
            return
        decision = self.compile.observe(seconds, self.state.step + 1)
        if decision is not None and self.accelerator.num_processes > 1:
            decision = self._sum_over_ranks(float(decision)) == self.accelerator.num_processes  # ranks agree
        if decision:
            self._compile_model()

    def _compile_model(self) -> None:
        """torch.compile the training forward (+ loss); ``unwrapped`` stays the plain module, so checkpoints,
        evaluation and ``save_pretrained`` see the original parameter names (no ``_orig_mod.``)."""
        self.model = torch.compile(self.model, mode=self.cfg.torch_compile_mode)
        self.compiled = True
        self._warn(f"torch.compile on from step {self.state.step + 1} ({self.compile.reason})")

    def _log_compile_time(self) -> None:
        """Compile time = first compiled step minus a typical step (eager probe, else later compiled steps)."""
        times = self._compiled_step_seconds
        if not times or self._compile_logged:
            return
        typical = self.compile.eager_step_seconds or (statistics.median(times[1:]) if len(times) > 1 else 0.0)
        seconds = max(times[0] - typical, 0.0)
        self._compile_logged = True
        self.metrics.append({"step": self.state.step, "event": "torch_compile", "compile_seconds": round(seconds, 2),
                             "mode": self.cfg.torch_compile_mode or "default"})
        remember_compile_seconds(self.accelerator.device.type, seconds, typical)

    def _write_summary(self) -> None:
        summary: dict[str, Any] = {"precision": self.precision, "torch_compile": self.compiled,
                                   "tokens_seen": self.state.tokens_seen, "steps": self.state.step}
        if self.flops_per_token:
            summary.update(flops_per_token=self.flops_per_token,
                           train_flops=self.flops_per_token * self.state.tokens_seen)
            if self.train_seconds > 0:
                summary["train_seconds_this_session"] = round(self.train_seconds, 3)
            if self.peak_flops:
                summary["matmul_peak_flops"] = self.peak_flops
        if self.compile.reason:
            summary["torch_compile_reason"] = self.compile.reason
        if self.accelerator.is_main_process:
            self.run.update_summary(summary)

    def evaluate(self) -> dict[str, Any]:
        batch_size = self.cfg.per_device_eval_batch_size
        while True:
            try:
                with evaluation_values(self.unwrapped, self.eval_values), self.accelerator.autocast():
                    totals = validation_loss(self.unwrapped, self.data, batch_size, mask_token_id=self.mask_token_id)
                break
            except Exception as exc:
                if not is_oom(exc) or batch_size == 1:
                    raise
                batch_size //= 2
                self._warn(f"out of memory in evaluation: eval batch halved to {batch_size}")
        metrics = {"step": self.state.step, "eval_loss": totals.loss, "eval_bits_per_byte": totals.bits_per_byte}
        self.metrics.append(metrics)
        self.accelerator.log({k: v for k, v in metrics.items() if k != "step" and v is not None}, step=self.state.step)
        if totals.loss < self.state.best_eval_loss - max(self.cfg.early_stopping_threshold, 1e-6):
            self.state.best_eval_loss, self.state.evals_without_improvement = totals.loss, 0
        else:
            self.state.evals_without_improvement += 1
            patience = self.cfg.early_stopping_patience
            if patience and self.state.evals_without_improvement >= patience:
                self.state.stop_reason = f"early stopping: no eval_loss improvement in {patience} evaluations"
                self._warn(self.state.stop_reason)
        if self.cfg.load_best_model_at_end:
            self._track_best(metrics)
        self._emit("on_evaluate", metrics)
        return metrics

    def _track_best(self, metrics: dict[str, Any]) -> None:
        key = best.metric_key(self.cfg.metric_for_best_model)
        value = metrics.get(key)
        if value is None or not value < self.state.best_metric:
            return
        self.state.best_metric, self.state.best_step = float(value), self.state.step
        if self.accelerator.is_main_process:
            best.save_best(self.checkpoint_dir, self.unwrapped, self.state.step, key, float(value),
                           include_frozen=self.checkpoint_frozen)

    def _load_best(self) -> None:
        if not self.state.best_step or self.state.best_step == self.state.step:
            return
        meta = best.load_best(self.checkpoint_dir, self.unwrapped)
        if meta is None:
            self._warn("load_best_model_at_end: the best model's weights are missing; the last weights are kept")
            return
        self._warn(f"loaded the best model: step {meta['step']} ({meta['metric']} {meta['value']:.4f})")


def validation_loss(model: nn.Module, data: DataBundle, batch_size: int, max_examples: int | None = None,
                    mask_token_id: int | None = None) -> LossTotals:
    """Next-token loss on the validation split, or with ``mask_token_id`` the masked-diffusion objective
    (fixed masks, the same at every evaluation)."""
    limit = max_examples or (data.config.max_eval_blocks if data.config else 64)
    n = min(len(data.validation), limit)
    was_training = model.training
    model.eval()
    totals = LossTotals() if mask_token_id is None else MaskedTotals()
    for start in range(0, n, batch_size):
        rows = list(range(start, min(start + batch_size, n)))
        batch = data.batch(data.validation, rows)
        if mask_token_id is None:
            totals.add(score_batch(model, batch, data.token_bytes))
        else:
            seeds = [row_seed(VALIDATION_MASK_SEED, j) for j in rows]
            totals.add(score_masked_batch(model, batch, mask_token_id, seeds, data.token_bytes))
    model.train(was_training)
    return totals


def _mask_token_id(data: DataBundle, objective: str) -> int | None:
    """The mask token of a masked-diffusion run (None for next-token training)."""
    if objective != "masked_diffusion":
        return None
    mask_id = data.tokenizer.mask_token_id
    if mask_id is None:
        raise ArchlabError("train.objective=masked_diffusion needs a tokenizer with a mask token; set "
                           "data.add_mask_token=true (a run config sets it for such runs)")
    return mask_id


def apply_trainable(model: nn.Module, patterns: list[str] | None) -> None:
    if patterns is None:
        return
    matched = 0
    for name, p in model.named_parameters():
        keep = any(fnmatch(name, pat) for pat in patterns)
        p.requires_grad_(keep)
        matched += keep
    if not matched:
        raise ArchlabError(f"train.trainable {patterns} matches no parameter name (example: '*.q_proj.*')")


TRACKER_MODULES = {"wandb": "wandb", "tensorboard": "tensorboard", "mlflow": "mlflow", "comet_ml": "comet_ml",
                   "aim": "aim", "clearml": "clearml", "dvclive": "dvclive"}


def check_trackers(names: list[str]) -> None:
    import importlib.util

    for name in names:
        module = TRACKER_MODULES.get(name)
        if module is None:
            raise ArchlabError(f"train.report_to: unknown tracker '{name}'{did_you_mean(name, TRACKER_MODULES)}; use one of "
                               f"{', '.join(sorted(TRACKER_MODULES))}")
        if importlib.util.find_spec(module) is None:
            raise ArchlabError(f"train.report_to lists '{name}' but it is not installed: pip install {module}")


def _release_precision(mixed: str) -> None:
    """accelerate keeps one process-wide state and refuses a second Accelerator with another precision; runs
    of one process (a plan's runs, tests) may differ, so a differing state is dropped (the process group, in
    PartialState, is kept)."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and str(AcceleratorState._shared_state.get("_mixed_precision")) != mixed:
        AcceleratorState._reset_state()


def _grad_norm(model: nn.Module) -> float:
    grads = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0
