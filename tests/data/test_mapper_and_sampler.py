import itertools

import numpy as np
import torch

from opmask.data.catalog import load_dataset
from opmask.data.mapper import DatasetMapper, shortest_edge_size
from opmask.data.samplers import TrainingBatchSampler


def test_shortest_edge_size():
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert shortest_edge_size(100, 1000, 800, 1333) == (133, 1333)


def test_flip_keeps_boxes_and_masks_consistent(shapes_env):
    dicts, _ = load_dataset("shapes_train")
    mapper = DatasetMapper(is_train=True, min_sizes=[120], max_size=400, flip=True)
    d = next(x for x in dicts if x["annotations"])
    flips = 0
    for seed in range(6):
        out = mapper(d, np.random.default_rng(seed))
        inst = out["instances"]
        assert out["image"].shape[1:] == inst["masks"].shape[1:]
        for box, m in zip(inst["boxes"], inst["masks"]):
            ys, xs = torch.nonzero(m, as_tuple=True)
            # the rasterised mask lies inside its (rescaled) box, up to a pixel of rounding
            assert xs.min() >= box[0] - 1.5 and xs.max() + 1 <= box[2] + 1.5
            assert ys.min() >= box[1] - 1.5 and ys.max() + 1 <= box[3] + 1.5
        plain = mapper(d)  # no rng: no flip, first size
        flips += not torch.equal(out["image"], plain["image"])
    assert flips > 0
    assert inst["labels"].min() >= 1


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_sampler_is_deterministic_and_resumable():
    flags = [i % 3 == 0 for i in range(17)]
    full = _take(TrainingBatchSampler(flags, 2, seed=4), 30)
    assert full == _take(TrainingBatchSampler(flags, 2, seed=4), 30)
    assert full[12:30] == _take(TrainingBatchSampler(flags, 2, seed=4, start_iter=12), 18)
    assert full != _take(TrainingBatchSampler(flags, 2, seed=5), 30)
    for batch in full:  # aspect groups are never mixed
        assert len({flags[i] for i, _ in batch}) == 1


def test_sampler_ranks_partition_the_stream():
    flags = [True] * 10
    r0 = _take(TrainingBatchSampler(flags, 2, seed=1, rank=0, world_size=2), 10)
    r1 = _take(TrainingBatchSampler(flags, 2, seed=1, rank=1, world_size=2), 10)
    p0 = {p for b in r0 for _, p in b}
    p1 = {p for b in r1 for _, p in b}
    assert not p0 & p1 and p0 | p1 == set(range(40))
    single = _take(TrainingBatchSampler(flags, 4, seed=1, group=False), 10)
    assert {p for b in single for _, p in b} == set(range(40))
