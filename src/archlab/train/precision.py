"""Which mixed precision a GPU gets: the rule behind each plan's GPU profile.

- compute capability >= 8.0 (Ampere and later: A100, A10, L4, H100): ``bf16`` (no loss scaling needed);
- 7.x (Volta V100, Turing T4): no bfloat16 in hardware, so ``fp16`` autocast with a loss scaler
  (accelerate's ``mixed_precision="fp16"`` creates ``torch.amp.GradScaler``; archlab's loop skips the
  update of a step whose gradients overflow and the scaler lowers its scale, see ``Trainer``);
- older GPUs: full fp32 (``no``).

``bf16: auto`` (``archlab.train.acceleration.resolve_precision``) applies this rule on CUDA; on a CPU it picks
bf16 autocast when the CPU has native bf16 (avx512_bf16 / AMX, read from its flags), else fp32.

Seed 000 ran on 2x T4, so ``plans/titanesque_v2.yaml``'s ``full`` profile sets ``train.fp16: true``.
"""

from __future__ import annotations

from typing import Literal

Precision = Literal["bf16", "fp16", "no"]


def precision_for(capability: tuple[int, int] | None) -> Precision:
    """The mixed precision for a CUDA device of this compute capability (None: no GPU)."""
    if capability is None:
        return "no"
    if capability >= (8, 0):
        return "bf16"
    if capability >= (7, 0):
        return "fp16"
    return "no"


def train_keys(precision: Precision) -> dict[str, bool]:
    """The TrainingArguments-style keys a plan sets for ``precision``."""
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def this_device() -> Precision:
    import torch

    return precision_for(torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None)
