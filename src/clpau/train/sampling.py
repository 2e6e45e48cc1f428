"""Which clips a step reads: one epoch's shuffle drawn from (seed, epoch) alone, dealt out to the DDP processes (by
chunk for a clip store), and one loader for a whole run that a resumed run re-enters at the batch it stopped at."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from clpau.data.datasets import collate


def epoch_batches(n: int, batch: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                  chunks: np.ndarray | None = None) -> list[list[int]]:
    """One epoch's batches for process `rank` of `world_size`: a shuffle of the n items drawn from (seed, epoch)
    alone, cut into full batches and dealt out in turn, as many to every process (DDP steps in lockstep). Nothing
    carries over from the epochs before, so a run resumed in the middle of epoch e draws e's batches exactly as the
    uninterrupted run did.

    Items of a clip store (`chunks`: each item's chunk) are dealt by chunk instead: process r reads the items of
    chunks r, r + world_size, … (the same chunks every epoch, so a streamed store fetches each chunk once, into one
    process's cache), in the epoch's shuffle order, as many full batches as the process with the fewest items has.
    With one process that is the shuffle above, batch for batch."""
    order = np.random.default_rng((seed, epoch)).permutation(n)
    if chunks is None or world_size == 1:
        dealt = batches_per_epoch(n, batch, world_size) * world_size
        return [order[b * batch: (b + 1) * batch].tolist() for b in range(rank, dealt, world_size)]
    mine = order[chunks[order] % world_size == rank]
    per = batches_per_epoch(n, batch, world_size, chunks)
    return [mine[b * batch: (b + 1) * batch].tolist() for b in range(per)]


def batches_per_epoch(n: int, batch: int, world_size: int = 1, chunks: np.ndarray | None = None) -> int:
    """Full batches of n items that each of `world_size` processes gets in an epoch (`epoch_batches`)."""
    if chunks is None or world_size == 1:
        return n // batch // world_size
    return int(np.bincount(chunks % world_size, minlength=world_size).min()) // batch


class EpochBatch(list):
    """A batch's indices and the epoch they were drawn for. A dataset's `__getitems__` augments them as that epoch
    says (ClipDataset), so one loader, and its worker processes, can serve many epochs: `set_epoch` reaches only
    the process it is called in."""

    def __init__(self, indices, epoch: int):
        super().__init__(indices)
        self.epoch = epoch

    def __reduce__(self):  # to the loader's workers, with its epoch
        return EpochBatch, (list(self), self.epoch)


class RunBatches:
    """The batch sampler of a run: `count` batches from batch `skip` of epoch `epoch` on, epoch after epoch
    (`epoch_batches`), each an EpochBatch."""

    def __init__(self, n: int, batch: int, seed: int, epoch: int, skip: int, count: int, rank: int = 0,
                 world_size: int = 1, chunks: np.ndarray | None = None):
        self.args, self.start, self.count = (n, batch, seed, rank, world_size, chunks), (epoch, skip), count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        n, batch, seed, rank, world_size, chunks = self.args
        epoch, skip = self.start
        left = self.count
        while left > 0:
            for indices in epoch_batches(n, batch, seed, epoch, rank, world_size, chunks)[skip:][:left]:
                yield EpochBatch(indices, epoch)
                left -= 1
            epoch, skip = epoch + 1, 0


def epoch_loader(dataset, batch: int, num_workers: int, seed: int, epoch: int = 0, skip: int = 0, rank: int = 0,
                 world_size: int = 1, count: int | None = None, chunks: np.ndarray | None = None) -> DataLoader:
    """Batches (`epoch_batches`) from batch `skip` of epoch `epoch` on: the rest of that epoch, or `count` batches
    across as many epochs as they take. One loader for a whole run: restarting the worker processes at every epoch
    cost the GPU loop up to a third of its time where an epoch is a few dozen batches. A dataset with
    `__getitems__` takes each batch's epoch from it (EpochBatch); one without augments as `set_epoch` says, so give
    it one epoch at a time (count None)."""
    per_epoch = batches_per_epoch(len(dataset), batch, world_size, chunks)
    batches = RunBatches(len(dataset), batch, seed, epoch, skip, per_epoch - skip if count is None else count,
                         rank, world_size, chunks)
    # pinned host memory: Fabric copies batches to a GPU with non_blocking=True, which only overlaps from pinned pages
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate,
                      pin_memory=torch.cuda.is_available())
