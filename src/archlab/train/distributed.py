"""Data parallelism as launchers set it up: where this process stands, and what a lost peer looks like.

``torchrun`` and ``accelerate launch`` start one process per device and export ``RANK`` / ``WORLD_SIZE``;
accelerate's ``Accelerator`` reads the same variables and wraps the model in DDP (gloo on CPU, NCCL on
CUDA). archlab adds only the bookkeeping around it: rank 0 owns the run folder (lock, status, metrics,
checkpoints, evals, export); every rank trains and reads the checkpoint it resumes from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Place:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def place() -> Place:
    """This process's rank and the world size, as torchrun / accelerate launch / mpirun export them."""

    def first(*names: str) -> int | None:
        for name in names:
            value = os.environ.get(name, "").strip()
            if value.isdigit():
                return int(value)
        return None

    world = first("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE") or 1
    rank = first("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK") or 0
    return Place(rank=rank if world > 1 else 0, world_size=world)


def lost_peer(exc: BaseException) -> bool:
    """True for the error a collective raises when another rank died (gloo: connection closed/reset)."""
    try:
        from torch.distributed import DistError
    except ImportError:  # older torch: the backends raise RuntimeError
        DistError = RuntimeError  # noqa: N806
    text = str(exc).lower()
    markers = ("connection closed", "connection reset", "broken pipe", "peer", "gloo", "nccl", "timed out")
    return isinstance(exc, DistError | RuntimeError) and any(m in text for m in markers)


class NoMetrics:
    """The metrics log of a rank other than 0: rank 0 writes metrics.jsonl, once."""

    def append(self, record: dict) -> None:
        pass

    def read(self) -> list[dict]:
        return []

    def truncate_after(self, step: int) -> None:
        pass


def cpu_ddp_if_no_accelerator() -> bool:
    """Under torchrun on a machine without CUDA, have accelerate run DDP over gloo on CPU.

    accelerate detects a CPU process group only when told to use the CPU (``accelerate launch --cpu`` sets
    ``ACCELERATE_USE_CPU``); a bare ``torchrun`` on a CPU machine would otherwise leave each rank training
    alone on its own slice of the batch. accelerate's ``PartialState`` reads that variable only through
    ``AcceleratorState``: a ``PartialState`` made first must be given ``cpu=True`` itself, so this returns
    whether to pass it.
    """
    import torch

    if place().distributed and not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
        return True
    return False
