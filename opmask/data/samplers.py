"""Deterministic, resumable, distributed training batches.

The global batch of iteration ``k`` (all ranks' images together) is a pure function of
``(seed, k, global batch size)``, whatever the number of processes: global batches are formed
from the one global stream (grouped by aspect ratio there), and rank ``r`` of ``W`` takes its
elements ``r, r + W, r + 2W, ...`` (at world size W with grouping off, the pairing of images
within a rank, hence their padding, is what it was before global batches). Resuming at
iteration ``k`` replays the index arithmetic (no image is read) and continues with exactly the
batches an uninterrupted run would have seen. Each element is ``(index, position)``;
``position`` in the global stream seeds that sample's augmentation, so augmentations depend
neither on loader workers nor on the number of processes.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def global_stream(n: int, seed: int, shuffle: bool = True) -> Iterator[tuple[int, int]]:
    """Infinite ``(dataset index, global position)``: one permutation per epoch."""
    epoch, position = 0, 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        for idx in order:
            yield int(idx), position
            position += 1
        epoch += 1


def global_batches(
    flags: Sequence[bool], size: int, seed: int, group: bool = True, shuffle: bool = True
) -> Iterator[list[tuple[int, int]]]:
    """Infinite global batches of ``size`` ``(index, position)``, each of one aspect group."""
    buckets: dict[bool, list] = {True: [], False: []}
    for idx, pos in global_stream(len(flags), seed, shuffle):
        bucket = buckets[flags[idx] if group else True]
        bucket.append((idx, pos))
        if len(bucket) == size:
            yield bucket[:]
            bucket.clear()


class TrainingBatchSampler:
    """Infinite per-rank batches: this rank's slice of the global batches, optionally grouped by
    aspect ratio (landscape vs portrait; a global batch holds one group).

    Args:
        aspect_flags: per image, True when width > height (its group; a square image is in
            the portrait group, as in Detectron2's ``AspectRatioGroupedDataset``).
        batch_size: images per batch on this rank (the global batch is ``world_size`` times it).
        seed, rank, world_size: the stream's identity.
        start_iter: first batch to produce (resume).
        group: batch only images of the same aspect group together.
    """

    def __init__(
        self,
        aspect_flags: Sequence[bool],
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
        group: bool = True,
        shuffle: bool = True,
    ):
        if len(aspect_flags) == 0:
            raise ValueError("the training set is empty")
        self.flags, self.batch_size = list(aspect_flags), batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_iter, self.group, self.shuffle = start_iter, group, shuffle

    def _batches(self) -> Iterator[list[tuple[int, int]]]:
        for batch in global_batches(
            self.flags, self.batch_size * self.world_size, self.seed, self.group, self.shuffle
        ):
            yield batch[self.rank :: self.world_size]  # positions r, r + W, ... as before

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batches = self._batches()
        for _ in range(self.start_iter):
            next(batches)
        yield from batches
