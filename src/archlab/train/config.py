"""Training settings, named as in Hugging Face ``TrainingArguments`` wherever a name exists there."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from archlab.config import Config, later_defaults


class ScheduleSpec(Config):
    """A parameter schedule: ``type`` names an entry of archlab.train.schedules.SCHEDULES."""

    type: str = Field(description="constant | linear | cyclic | warmup_decay | piecewise")
    value: float | None = Field(None, description="constant: the value")
    start: float | None = Field(None, description="linear: value at step 0")
    end: float | None = Field(None, description="linear: value from step 'steps' on")
    steps: int | None = Field(None, ge=0, description="linear: steps of the transition")
    values: list[float] | None = Field(None, description="cyclic: values taken in turn, one per optimizer step; "
                                       "piecewise: the value before the first boundary, then after each")
    peak: float | None = Field(None, description="warmup_decay: value after warmup")
    final: float | None = Field(None, description="warmup_decay: value after decay")
    warmup_steps: int | None = Field(None, ge=0, description="warmup_decay: steps from 0 to peak")
    decay_start: int | None = Field(None, ge=0, description="warmup_decay: step where decay begins")
    decay_end: int | None = Field(None, ge=0, description="warmup_decay: step where the final value is reached")
    boundaries: list[float] | None = Field(None, description="piecewise: where each next value of 'values' starts "
                                           "(ascending; len(values) = len(boundaries) + 1)")
    unit: Literal["step", "epoch"] = Field("step", description="what the schedule counts: optimizer steps, or "
                                           "epochs (the 0-based epoch index of the step; seed 002's staged "
                                           "clipping)")
    eval_value: float | None = Field(None, description="value every evaluation of the run uses (in-run and "
                                     "`archlab eval`); None: the schedule's value at the final step (cyclic "
                                     "schedules must set it)")


class LrScaling(Config):
    """The learning rate from the batch size: lr = base_learning_rate * (batch / base_batch_size) ** power."""

    base_learning_rate: float = Field(gt=0, description="learning rate at base_batch_size")
    base_batch_size: int = Field(ge=1, description="effective batch (examples per optimizer step) of the base lr")
    rule: Literal["sqrt", "linear"] = Field("sqrt", description="sqrt: the square-root rule (Adam; seed 002), "
                                            "linear: lr proportional to the batch (SGD, Goyal et al.)")


def scaled_learning_rate(scaling: LrScaling, batch: int) -> float:
    """``base_lr * sqrt(batch / base_batch)`` (or linear): seed 002 scaled 1e-4 at 32 to 8e-4 at 2048."""
    power = 0.5 if scaling.rule == "sqrt" else 1.0
    return scaling.base_learning_rate * (batch / scaling.base_batch_size) ** power


class FsdpConfig(Config):
    """``train.fsdp_config``: HF TrainingArguments' ``fsdp_config`` keys that archlab reads."""

    transformer_layer_cls_to_wrap: list[str] | None = Field(
        None, description="block class names that auto_wrap shards as their own unit (default: the model's "
        "_no_split_modules, e.g. DecoderBlock)")


class TrainConfig(Config):
    per_device_train_batch_size: int = Field(8, ge=1, description="examples per device per micro-batch")
    per_device_eval_batch_size: int = Field(8, ge=1, description="examples per device per evaluation batch")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    learning_rate: float = Field(3e-4, gt=0, description="peak learning rate (AdamW, and the AdamW part of muon)")
    lr_scheduler_type: str = Field("cosine", description="any transformers.get_scheduler name: linear, cosine, "
                                   "constant, constant_with_warmup, ...")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="share of steps spent warming up the learning rate")
    warmup_steps: int = Field(0, ge=0, description="warmup steps (overrides warmup_ratio when > 0)")
    num_train_epochs: float = Field(1.0, gt=0, description="epochs over the training split (when max_steps <= 0)")
    max_steps: int = Field(-1, description="optimizer steps; overrides num_train_epochs when > 0")
    optim: Literal["adamw", "adamw_torch", "adamw_torch_fused", "muon", "muon_full", "m3"] = Field(
        "adamw", description="adamw, or muon: torch.optim.Muon on 2-D hidden weights + AdamW on the rest; "
        "muon_full: Muon on every 2-D weight (embeddings and head too); m3: multi-scale momentum Muon "
        "(archlab.train.m3) on the 2-D hidden weights + AdamW on the rest"
    )
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay (not applied to norms and biases)")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon")
    muon_learning_rate: float = Field(0.02, gt=0, description="learning rate of the Muon part of optim=muon")
    muon_momentum: float = Field(0.95, ge=0, lt=1, description="Muon momentum")
    muon_weight_decay: float | None = Field(
        None, ge=0, description="decoupled weight decay of the Muon part; None: weight_decay * learning_rate / "
        "muon_learning_rate, so a Muon matrix shrinks by the same factor per step as an AdamW one (each optimizer "
        "multiplies the decay by its own lr)")
    m3_slow_every: int = Field(8, ge=1, description="m3: steps between updates of the slow momentum")
    m3_slow_weight: float = Field(1.0, ge=0, description="m3: weight of the orthogonalised slow momentum")
    m3_slow_beta: float = Field(0.9, ge=0, lt=1, description="m3: decay of the slow momentum (per slow update)")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping norm (0 disables)")
    logging_steps: int = Field(10, ge=1, description="log loss, lr, grad norm, tokens/s, memory every N steps")
    eval_steps: int = Field(0, ge=0, description="validation loss every N steps (0: only at the end)")
    save_steps: int = Field(0, ge=0, description="checkpoint every N steps (0: only at the end)")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept (oldest deleted first)")
    seed: int = Field(42, description="seed of weights init, data order and dropout")
    bf16: bool | Literal["auto"] = Field(
        "auto", description="bfloat16 autocast; auto: bf16 on CUDA with bf16 support and on CPUs with native bf16 "
        "(avx512_bf16/AMX), fp16 with loss scaling on CUDA without it (T4), fp32 otherwise (weights and optimizer "
        "state stay fp32; env.json records the precision used)")
    fp16: bool = Field(False, description="float16 autocast with loss scaling")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward to save memory")
    early_stopping_patience: int = Field(0, ge=0, description="stop after N evaluations without improvement (0 off)")
    load_best_model_at_end: bool = Field(False, description="at the end, load the weights of the best evaluation "
                                         "(by metric_for_best_model), so the run's model/ is the best one; the "
                                         "run's status records its step (best_step)")
    metric_for_best_model: Literal["eval_loss", "loss", "eval_bits_per_byte", "bits_per_byte"] = Field(
        "eval_loss", description="metric of load_best_model_at_end (lower is better)")
    nan_policy: Literal["stop", "skip"] = Field("stop", description="on NaN/Inf loss: stop (status diverged) or skip "
                                                "the step and count it")
    max_skipped_steps: int = Field(20, ge=1, description="with nan_policy=skip: consecutive skips before diverged")
    report_to: list[str] = Field(default_factory=list, description="trackers through accelerate: tensorboard, wandb (offline unless WANDB_MODE/WANDB_API_KEY), mlflow (local SQLite unless MLFLOW_TRACKING_URI)")
    push_to_hub: bool = Field(False, description="after a run finishes, push its model with a generated model card "
                              "to hub_model_id (offline: one line, the run stays done; or later: archlab push RUN)")
    hub_model_id: str | None = Field(None, description="Hugging Face repo id for push_to_hub, e.g. user/name (default: "
                                     "the run id under your account)")
    objective: Literal["auto", "causal_lm", "masked_diffusion"] = Field(
        "auto", description="training loss: causal_lm (next-token) or masked_diffusion (LLaDA/Dream: masked tokens "
        "predicted, weighted 1/t); auto: masked_diffusion when graft.bidirectional is true, else causal_lm (a "
        "run's config stores the resolved value)")
    schedules: dict[str, ScheduleSpec] = Field(
        default_factory=dict, description="parameter schedules by target attribute, e.g. {mag_weight: {type: "
        "constant, value: 0.5}}; set on every module with that attribute before each optimizer step"
    )
    torch_compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile the model for training; auto: never for runs under 100 steps, else "
        "probe 5 eager steps (median time t of the last 4) and compile when remaining_steps * t * (1 - 1/1.2) "
        "exceeds the compile time last measured on this machine (60 s before the first); the measured compile "
        "time is logged in metrics.jsonl")
    torch_compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None \
        = Field(None, description="torch.compile mode (None: torch's default)")
    fsdp: list[str] = Field(
        default_factory=list, description="sharded data parallelism under torchrun / accelerate launch, HF "
        "TrainingArguments' options: full_shard (ZeRO-3) or shard_grad_op (ZeRO-2), plus offload (shards in CPU "
        "memory) and auto_wrap (each block its own unit); a string 'full_shard auto_wrap' or a list; empty: DDP")
    fsdp_config: FsdpConfig = Field(default_factory=FsdpConfig, description="FSDP settings (HF's fsdp_config)")
    trainable: list[str] | None = Field(
        None, description="glob patterns of parameter names to train (fnmatch); None trains every parameter "
        "that requires grad"
    )

    early_stopping_threshold: float = Field(0.0, ge=0, description="minimum decrease of eval_loss that counts as "
                                            "an improvement for early_stopping_patience (HF EarlyStoppingCallback's "
                                            "name; seed 002: 1e-3)")
    lr_scaling: LrScaling | None = Field(None, description="derive learning_rate from the effective batch "
                                         "(per_device_train_batch_size x gradient_accumulation_steps): {"
                                         "base_learning_rate, base_batch_size, rule: sqrt}; learning_rate is then "
                                         "the derived value")

    @field_validator("fsdp", mode="before")
    @classmethod
    def _fsdp_options(cls, value):
        from archlab.train.fsdp import parse_options

        return parse_options(value)

    @model_validator(mode="before")
    @classmethod
    def _scale_learning_rate(cls, data):
        """Set learning_rate from lr_scaling (a given learning_rate must agree: a saved config re-reads equal)."""
        if not isinstance(data, dict) or not data.get("lr_scaling"):
            return data
        scaling = LrScaling.model_validate(data["lr_scaling"])
        batch = int(data.get("per_device_train_batch_size", 8)) * int(data.get("gradient_accumulation_steps", 1))
        lr = scaled_learning_rate(scaling, batch)
        given = data.get("learning_rate")
        if given is not None and abs(float(given) - lr) > 1e-9 * lr:
            raise ValueError(f"learning_rate {given} disagrees with lr_scaling ({scaling.rule} rule gives {lr:.4g} at "
                             f"batch {batch}); set one of train.learning_rate or train.lr_scaling")
        return {**data, "learning_rate": lr}

    @property
    def resolved_muon_weight_decay(self) -> float:
        """Muon's decay coefficient: explicit, or the one whose per-step shrink ``lr * wd`` equals AdamW's."""
        if self.muon_weight_decay is not None:
            return self.muon_weight_decay
        return self.weight_decay * self.learning_rate / self.muon_learning_rate

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.bf16 is True and self.fp16:
            raise ValueError("bf16 and fp16 cannot both be true")
        if self.fp16 and self.bf16 == "auto":
            self.bf16 = False  # an explicit fp16 (T4 profiles) decides the precision; auto has nothing to pick
        if self.fsdp and self.optim in ("muon", "muon_full", "m3"):
            raise ValueError(f"optim={self.optim} with fsdp: Muon orthogonalises whole weight matrices, and FSDP "
                             f"gives each rank a shard of them; use optim=adamw with fsdp, or drop fsdp (DDP)")
        if self.fsdp and self.load_best_model_at_end:
            raise ValueError("load_best_model_at_end is not supported with fsdp yet; drop one of them")
        if self.load_best_model_at_end and self.eval_steps and self.save_steps and self.save_steps % self.eval_steps:
            raise ValueError("load_best_model_at_end needs save_steps to be a multiple of eval_steps (as HF "
                             f"TrainingArguments), got save_steps={self.save_steps}, eval_steps={self.eval_steps}")
        return self


# The keys runs were first named with. A key added later is left out of the run id while it is at its default
# (which reproduces what the older runs did), so adding a key does not rename, and re-run, every finished run.
FIRST_TRAIN_KEYS = frozenset(
    "per_device_train_batch_size per_device_eval_batch_size gradient_accumulation_steps learning_rate "
    "lr_scheduler_type warmup_ratio warmup_steps num_train_epochs max_steps optim weight_decay adam_beta1 adam_beta2 "
    "adam_epsilon muon_learning_rate muon_momentum muon_weight_decay max_grad_norm logging_steps eval_steps "
    "save_steps save_total_limit seed bf16 fp16 gradient_checkpointing early_stopping_patience nan_policy "
    "max_skipped_steps report_to objective schedules trainable".split())
FIRST_SCHEDULE_KEYS = frozenset("type value start end steps values peak final warmup_steps decay_start decay_end "
                                "eval_value".split())


NOT_IN_RUN_ID = later_defaults(TrainConfig, FIRST_TRAIN_KEYS)
