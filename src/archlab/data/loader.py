"""A resumable sampler: the batch at position p is a pure function of (seed, p), so resuming needs only p."""

from __future__ import annotations

import torch


class EpochSampler:
    """Seeded permutation per epoch, cut into batches of ``batch_size`` examples (last partial batch dropped).

    ``rank``/``world_size`` give each data-parallel process a disjoint slice of every batch.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1):
        if num_examples < batch_size * world_size:
            raise ValueError(
                f"only {num_examples} training examples for a global batch of {batch_size * world_size}; "
                f"lower per_device_train_batch_size or use more data"
            )
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = num_examples // (batch_size * world_size)
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def epoch_of(self, position: int) -> float:
        return position / self.batches_per_epoch

    def indices(self, position: int) -> list[int]:
        epoch, within = divmod(position, self.batches_per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.num_examples, generator=gen)
        global_size = self.batch_size * self.world_size
        start = within * global_size + self.rank * self.batch_size
        return self._perm[start : start + self.batch_size].tolist()
