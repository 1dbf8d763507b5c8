"""Config -> datasets and loaders. The only place in ``opmask.data`` that reads cfg."""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ..config.checks import check_world
from ..utils.malloc import fix_mmap_threshold
from .catalog import with_instances
from .coco import DatasetError
from .mapper import DatasetMapper
from .samplers import TrainingBatchSampler

logger = logging.getLogger(__name__)


class MapDataset(Dataset):
    """Applies the mapper; a key ``(index, position)`` seeds the augmentation of that sample and
    gives it ``sample_seed`` (for the model's anchor and RoI sampling), both functions of the
    seed and the position in the global stream only."""

    def __init__(self, dicts: list[dict], mapper: DatasetMapper, seed: int = 0):
        self.dicts, self.mapper, self.seed = dicts, mapper, seed

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, key):
        idx, rng = key, None
        if isinstance(key, tuple):
            idx, rng = key[0], np.random.default_rng([self.seed, key[1]])
        d = self.dicts[idx]  # from the index: this sample's dict exists only for this batch
        try:
            out = self.mapper(d, rng)
        except DatasetError as e:
            msg = str(e) if str(e).startswith("image id") else f"image id {d['image_id']}: {e}"
            if get_worker_info() is not None:  # a loader worker: the main process raises it
                return Unreadable(msg)
            raise DatasetError(msg) from None
        if isinstance(key, tuple):
            out["sample_seed"] = sample_seed(self.seed, key[1])
        return out


class Unreadable:
    """A sample a loader worker could not map: the one-line ``DatasetError`` message, carried to
    the main process as data. (Raised in the worker, torch would re-raise it there with the
    worker's whole traceback in its message.)"""

    def __init__(self, message: str):
        self.message = message


class Loader(DataLoader):
    """A ``DataLoader`` whose iteration raises a worker's ``DatasetError`` (an image that cannot
    be read) in the main process as the one line it was."""

    def __iter__(self):
        for batch in super().__iter__():
            bad = next((s for s in batch if isinstance(s, Unreadable)), None)
            if bad is not None:
                raise DatasetError(bad.message)
            yield batch


def sample_seed(seed: int, position: int) -> int:
    """The seed of the model's random choices for the sample at ``position`` of the global
    training stream (independent of the augmentation's generator)."""
    return int(np.random.SeedSequence([seed, position, 1]).generate_state(1, np.uint64)[0])


def trivial_collate(batch: list) -> list:
    return batch


def build_train_loader(
    cfg, dicts: list[dict], *, seed: int, rank: int, world_size: int, start_iter: int
) -> Loader:
    """Infinite loader of lists of mapped dicts; the per-rank batch is IMS_PER_BATCH / world."""
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        kept = with_instances(dicts)
        if len(kept) < len(dicts):
            logger.info("Removed %d training images without instances", len(dicts) - len(kept))
        dicts = kept
    check_world(cfg, world_size)  # refused before any run folder exists (validate_inputs)
    batch = cfg.SOLVER.IMS_PER_BATCH // world_size
    mapper = DatasetMapper(
        is_train=True,
        min_sizes=cfg.INPUT.MIN_SIZE_TRAIN,
        max_size=cfg.INPUT.MAX_SIZE_TRAIN,
        sampling=cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
        flip=cfg.INPUT.RANDOM_FLIP == "horizontal",
        image_format=cfg.INPUT.FORMAT,
        mask_on=cfg.MODEL.MASK_ON,
    )
    sampler = TrainingBatchSampler(
        _aspect_flags(dicts),
        batch,
        seed=seed,
        rank=rank,
        world_size=world_size,
        start_iter=start_iter,
        group=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
    )
    return Loader(
        MapDataset(dicts, mapper, seed),
        batch_sampler=sampler,
        collate_fn=trivial_collate,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        generator=_own_generator(seed),
        pin_memory=_pin(cfg),
        worker_init_fn=_worker_init(cfg),
    )


def _worker_init(cfg):
    """What each loader worker runs first: fix its allocator's mmap threshold."""
    return functools.partial(_init_worker, cfg.DATALOADER.WORKER_MMAP_THRESHOLD)


def _init_worker(mmap_threshold: int, worker_id: int) -> None:
    fix_mmap_threshold(mmap_threshold)


def _aspect_flags(dicts) -> list[bool]:
    """Per image, width > height (its aspect group; squares are portrait, as Detectron2's
    ``AspectRatioGroupedDataset``)."""
    if isinstance(dicts, list):
        return [d["width"] > d["height"] for d in dicts]
    return dicts.aspect_flags().tolist()


def _own_generator(seed: int) -> torch.Generator:
    """Creating a loader iterator draws a seed; from this generator, not the global RNG, so a
    resumed run's RNG stream (RoI sampling) matches the uninterrupted run's."""
    return torch.Generator().manual_seed(seed)


def _pin(cfg) -> bool:
    """Page-locked batches when training on CUDA, so host-to-device copies run asynchronously."""
    return cfg.MODEL.DEVICE != "cpu" and torch.cuda.is_available()


def build_test_mapper(cfg) -> DatasetMapper:
    """The evaluation's mapper (test resize, no augmentation); the predictor and the
    TensorBoard overlays map images with it too."""
    return DatasetMapper(
        is_train=False,
        min_sizes=[cfg.INPUT.MIN_SIZE_TEST],
        max_size=cfg.INPUT.MAX_SIZE_TEST,
        image_format=cfg.INPUT.FORMAT,
    )


def build_gt_box_mapper(cfg) -> DatasetMapper:
    """The GT-box diagnostic's mapper: the test resize, no augmentation, the instances kept with
    (N, H, W) bit masks (``opmask.evaluation.gt_boxes``)."""
    return DatasetMapper(
        is_train=True,
        min_sizes=[cfg.INPUT.MIN_SIZE_TEST],
        max_size=cfg.INPUT.MAX_SIZE_TEST,
        image_format=cfg.INPUT.FORMAT,
        mask_format="bitmask",
    )


def build_test_loader(cfg, dicts: list[dict], *, rank: int = 0, world_size: int = 1) -> Loader:
    """Batch-1 loader over this rank's shard (images rank, rank + world, ...)."""
    mapper = build_test_mapper(cfg)
    shard = list(range(rank, len(dicts), world_size))
    return Loader(
        MapDataset(dicts, mapper),
        sampler=shard,
        batch_size=1,
        collate_fn=trivial_collate,
        num_workers=min(cfg.DATALOADER.NUM_WORKERS, 2),
        generator=_own_generator(0),
        pin_memory=_pin(cfg),
        worker_init_fn=_worker_init(cfg),
    )
