"""Deterministic, resumable, distributed training batches.

The stream of batches is a pure function of ``(seed, rank, world_size, batch_size, iteration)``:
resuming at iteration ``k`` replays the index arithmetic (no image is read) and continues with
exactly the batches an uninterrupted run would have seen. Each element is ``(index, position)``;
``position`` in the global stream seeds that sample's augmentation, so augmentations do not depend
on loader workers either.
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


class TrainingBatchSampler:
    """Infinite per-rank batches, optionally grouped by aspect ratio (landscape vs portrait).

    Args:
        aspect_flags: per image, True when width >= height (its group).
        batch_size: images per batch on this rank.
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
        buckets: dict[bool, list] = {True: [], False: []}
        for idx, pos in global_stream(len(self.flags), self.seed, self.shuffle):
            if pos % self.world_size != self.rank:
                continue
            bucket = buckets[self.flags[idx] if self.group else True]
            bucket.append((idx, pos))
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batches = self._batches()
        for _ in range(self.start_iter):
            next(batches)
        yield from batches
