"""Settings of a memory graft (seed 000, TPTT / LiZA): which operator, which layers, LoRA or not.

The allowed operators, feature maps, beta modes and output scales are the registries of ``archlab.nn.memory``
(one table each); this config validates against them, so a new entry there is a valid value here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from archlab.config import Config
from archlab.nn.memory import BETA_MODES, FEATURE_MAPS, OPERATORS, OUTPUT_SCALES


def _choices(registry) -> str:
    return " | ".join(registry.names())


class GraftConfig(Config):
    """A delta-rule memory branch grafted onto every (or some) attention layer of a pretrained model."""

    operator: str = Field("delta_rule", description=f"memory operator: {_choices(OPERATORS)} (`archlab ls`)")
    chunk_size: int | None = Field(None, ge=1, description="chunk of the chunked op; None: 64 for delta_rule*, 32 for "
                                   "delta_product* (part of the model only for delta_rule_gelu)")
    feature_map: str = Field("silu_l2", description=f"map applied to the memory's queries and keys: "
                             f"{_choices(FEATURE_MAPS)} (silu_l2: SiLU then L2 norm)")
    beta_mode: str = Field("head", description=f"write strength per head: {_choices(BETA_MODES)}")
    mag_weight: float = Field(0.5, ge=0, le=1, description="initial memory-as-gate weight mu in (1-mu)*attention + "
                              "mu*memory; train.schedules.mag_weight overrides it every step")
    eval_mag_weight: float | None = Field(
        None, ge=0, le=1, description="mu used by every evaluation of the run (in-run and `archlab eval`); None: "
        "resolved when the run config is made (the schedule's value at the final step for constant / linear / "
        "warmup_decay schedules, mag_weight without a schedule); a cyclic schedule must set it")
    output_scale: str = Field("attention", description=f"scale of the RMS-normalised memory output before o_proj: "
                              f"{_choices(OUTPUT_SCALES)}")
    bidirectional: bool = Field(False, description="run the memory forward and on the reversed sequence and average "
                                "(diffusion LMs such as Dream; breaks causality, no incremental decoding)")
    layers: list[int] | None = Field(None, description="indices of the attention layers to graft (None: all)")
    lora: bool = Field(True, description="LoRA on the attention projections (true) or train the projections "
                       "themselves with everything else frozen (false)")
    lora_r: int = Field(8, ge=1, description="LoRA rank")
    lora_alpha: float = Field(16, gt=0, description="LoRA alpha (scale alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    tptt_compat: bool = Field(False, description="reproduce TPTT's coded virtual tokens (signed lagged copies, "
                              "readout at the last virtual query) instead of the paper's; delta_product* only")
    impl: Literal["auto", "chunk", "naive"] = Field("auto", description="op implementation (auto: fla's kernel on "
                                                    "CUDA when installed, else the chunked torch form)")

    @field_validator("operator")
    @classmethod
    def _operator(cls, value: str) -> str:
        return _registered(OPERATORS, value)

    @field_validator("feature_map")
    @classmethod
    def _feature_map(cls, value: str) -> str:
        return _registered(FEATURE_MAPS, value)

    @field_validator("beta_mode")
    @classmethod
    def _beta_mode(cls, value: str) -> str:
        return _registered(BETA_MODES, value)

    @field_validator("output_scale")
    @classmethod
    def _output_scale(cls, value: str) -> str:
        return _registered(OUTPUT_SCALES, value)

    @property
    def resolved_chunk_size(self) -> int:
        """The chunk size in effect: explicit, or the operator's default (64 delta_rule*, 32 delta_product*)."""
        return self.chunk_size or OPERATORS.get(self.operator).default_chunk

    @model_validator(mode="after")
    def _check(self) -> GraftConfig:
        if self.tptt_compat and OPERATORS.get(self.operator).n_h < 2:
            raise ValueError("tptt_compat changes only the delta_product virtual tokens; use it with delta_product*")
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            raise ValueError("layers must be a non-empty list of non-negative indices, or null for all")
        return self


def _registered(registry, value: str) -> str:
    if value not in registry:
        from archlab.errors import did_you_mean

        raise ValueError(f"'{value}' is not a {registry.kind}{did_you_mean(value, registry.names())}; "
                         f"use one of {', '.join(registry.names())}")
    return value
