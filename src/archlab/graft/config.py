"""Settings of a memory graft (seed 000, TPTT / LiZA): which operator, which layers, LoRA or not."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from archlab.config import Config

Operator = Literal[
    "delta_rule", "delta_rule_gelu", "delta_product", "delta_product_rotation", "delta_product_derived_rotation"
]
DEFAULT_CHUNK = {"delta_rule": 64, "delta_rule_gelu": 64}  # every delta_product mode: 32 (2 virtual rows/token)


class GraftConfig(Config):
    """A delta-rule memory branch grafted onto every (or some) attention layer of a pretrained model."""

    operator: Operator = Field(
        "delta_rule", description="delta_rule | delta_rule_gelu (+ non-linearity) | delta_product (n_h=2, derivative) "
        "| delta_product_rotation | delta_product_derived_rotation (derivative + rotation)")
    chunk_size: int | None = Field(None, ge=1, description="chunk of the chunked op; None: 64 for delta_rule*, 32 for "
                                   "delta_product* (part of the model only for delta_rule_gelu)")
    feature_map: Literal["silu_l2", "relu_l2", "l2"] = Field("silu_l2", description="map applied to the memory's "
                                                             "queries and keys (silu_l2: SiLU then L2 norm)")
    beta_mode: Literal["head", "channel", "constant"] = Field(
        "head", description="write strength per head: sigmoid of the head-mean of the 3-tap averaged keys (head), "
        "head-mean of per-channel sigmoids (channel), or 0.5 (constant)")
    mag_weight: float = Field(0.5, ge=0, le=1, description="initial memory-as-gate weight mu in (1-mu)*attention + "
                              "mu*memory; train.schedules.mag_weight overrides it every step")
    output_scale: Literal["attention", "unit"] = Field(
        "attention", description="scale of the RMS-normalised memory output before o_proj: the base attention's "
        "per-token RMS (attention) or 1 (unit, as TPTT's default, which swamps small attention outputs)")
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

    @property
    def resolved_chunk_size(self) -> int:
        """The chunk size in effect: explicit, or the seed's rule (64 for delta_rule, 32 for delta_product)."""
        return self.chunk_size or DEFAULT_CHUNK.get(self.operator, 32)

    @model_validator(mode="after")
    def _check(self) -> GraftConfig:
        if self.tptt_compat and not self.operator.startswith("delta_product"):
            raise ValueError("tptt_compat changes only the delta_product virtual tokens; use it with delta_product*")
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            raise ValueError("layers must be a non-empty list of non-negative indices, or null for all")
        return self
