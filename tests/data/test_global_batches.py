"""The global batch of every iteration is the same whatever the number of processes."""

from __future__ import annotations

import itertools

from opmask.data.samplers import TrainingBatchSampler


def _global(flags, ims_per_batch, world, start_iter=0, n=25, group=True):
    """Iteration k's global batch: rank r holds its elements r, r + W, ... (interleaved back)."""
    ranks = [
        itertools.islice(
            TrainingBatchSampler(
                flags,
                ims_per_batch // world,
                seed=7,
                rank=r,
                world_size=world,
                start_iter=start_iter,
                group=group,
            ),
            n,
        )
        for r in range(world)
    ]
    return [[x for group in zip(*batches) for x in group] for batches in zip(*ranks)]


def test_global_batches_do_not_depend_on_the_world_size():
    flags = [i % 3 == 0 for i in range(23)]  # two aspect groups, uneven
    for group in (True, False):
        one = _global(flags, 8, 1, group=group)
        assert _global(flags, 8, 2, group=group) == one
        assert _global(flags, 8, 4, group=group) == one
        assert _global(flags, 8, 8, group=group) == one
        # resume at 10 with another world size continues the same global data
        assert _global(flags, 8, 2, start_iter=10, n=15, group=group) == one[10:]
        assert _global(flags, 8, 1, start_iter=10, n=15, group=group) == one[10:]
    for batch in _global(flags, 8, 4):  # a global batch holds one aspect group
        assert len({flags[i] for i, _ in batch}) == 1


def test_one_process_stream_is_unchanged():
    """World size 1 gives the batches it gave before the global grouping (golden values)."""
    flags = [i % 3 == 0 for i in range(17)]
    first = list(itertools.islice(iter(TrainingBatchSampler(flags, 2, seed=4)), 3))
    assert first == GOLDEN


GOLDEN = [[(8, 0), (1, 2)], [(0, 1), (15, 4)], [(16, 3), (2, 5)]]  # the old sampler's
