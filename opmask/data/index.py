"""A compact, memory-mapped dataset index: one copy of a COCO dataset per node.

The validated records of ``load_coco_json`` are packed into flat numpy arrays (image ids, sizes,
file names, boxes, categories, crowd flags, offsets into one polygon-coordinate array, RLE bytes in
one byte array) and written once to a single cache file. Every rank and every loader worker
memory-maps that file, so the physical memory is shared through the page cache, and a restart does
not parse the JSON at all. ``index[i]`` gives the very dict the JSON path gives for image ``i``.

Cache file layout: magic, header length, a JSON header (key, dataset info, one
``{dtype, shape, offset, crc32}`` per array), then the arrays, 64-byte aligned. The key is the
JSON's size, mtime and a hash of its first and last MB plus ``FORMAT_VERSION``. One process builds
(``fcntl`` lock) while the others wait; a stale or corrupt file is rebuilt with a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import logging
import os
import struct
import zlib
from collections import Counter
from dataclasses import asdict

import numpy as np

from ..utils.fs import atomic_write_bytes
from .coco import DatasetError, DatasetInfo, load_coco_json, log_warnings

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 2: DatasetInfo.warnings in the header; 3: zero-size boxes kept
MAGIC = b"OPMIDX01"
ALIGN = 64
SEG_NONE, SEG_POLYGON, SEG_RLE, SEG_RLE_LIST = 0, 1, 2, 3


def default_cache_dir(cache_dir: str = "") -> str:
    """``cache_dir`` (DATASETS.CACHE_DIR) if set, else ``$OPMASK_CACHE``, else the user's cache
    folder (``$XDG_CACHE_HOME/opmask``, default ``~/.cache/opmask``)."""
    if cache_dir:
        return cache_dir
    if os.environ.get("OPMASK_CACHE"):
        return os.environ["OPMASK_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "opmask")


def cache_path(json_file: str, cache_dir: str = "") -> str:
    """One cache file per annotation file (by absolute path), so a stale one is replaced."""
    real = os.path.realpath(json_file)
    tag = hashlib.blake2b(real.encode(), digest_size=6).hexdigest()
    stem = os.path.splitext(os.path.basename(json_file))[0]
    return os.path.join(default_cache_dir(cache_dir), f"{stem}-{tag}.opidx")


def json_key(json_file: str) -> str:
    """Size, mtime and a hash of the first and last MB of the file, plus the format version."""
    st = os.stat(json_file)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{FORMAT_VERSION}:{st.st_size}:{st.st_mtime_ns}".encode())
    with open(json_file, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, st.st_size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()


# ---------------------------------------------------------------- packing records into arrays


def _ragged(chunks: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated bytes (uint8) and offsets (n + 1,)."""
    starts = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in chunks], out=starts[1:])
    return np.frombuffer(b"".join(chunks), dtype=np.uint8).copy(), starts


class _SegPacker:
    """Segmentations to kinds, ranges and three flat stores (polygons, RLE bytes, RLE runs)."""

    def __init__(self):
        self.kind, self.lo, self.hi = [], [], []
        self.poly_len, self.coords, self.rle_bytes, self.rle_runs = [], [], [], []
        self.sizes = {"poly": 0, "bytes": 0, "runs": 0}

    def add(self, segm) -> None:
        if segm is None:
            self._put(SEG_NONE, "poly")
        elif isinstance(segm, list):
            self.poly_len += [len(p) for p in segm]
            self.coords += segm
            self._put(SEG_POLYGON, "poly", len(segm))
        elif isinstance(segm["counts"], str):
            self.rle_bytes.append(segm["counts"].encode("ascii"))
            self._put(SEG_RLE, "bytes", len(self.rle_bytes[-1]))
        else:
            self.rle_runs.append(segm["counts"])
            self._put(SEG_RLE_LIST, "runs", len(segm["counts"]))

    def _put(self, kind: int, store: str, n: int = 0) -> None:
        self.kind.append(kind)
        self.lo.append(self.sizes[store])
        self.sizes[store] += n
        self.hi.append(self.sizes[store])

    def arrays(self) -> dict[str, np.ndarray]:
        poly_start = np.zeros(len(self.poly_len) + 1, dtype=np.int64)
        np.cumsum(self.poly_len, out=poly_start[1:])
        coords = [c for p in self.coords for c in p]
        runs = [r for c in self.rle_runs for r in c]
        return {
            "seg_kind": np.asarray(self.kind, dtype=np.uint8),
            "seg_range": np.asarray([self.lo, self.hi], dtype=np.int64).T.reshape(-1, 2),
            "poly_start": poly_start,
            "poly_coords": np.asarray(coords, dtype=np.float64),
            "rle_bytes": np.frombuffer(b"".join(self.rle_bytes), dtype=np.uint8).copy(),
            "rle_runs": np.asarray(runs, dtype=np.int64),
        }


def _strip(file_name: str, prefix: str) -> str:
    """The JSON's name back: ``os.path.join(image_root, result) == file_name``."""
    return file_name[len(prefix) :] if prefix and file_name.startswith(prefix) else file_name


def pack(dicts: list[dict], image_root: str) -> dict[str, np.ndarray]:
    """Dataset dicts (``load_coco_json``'s) to flat arrays; file names relative to the root."""
    prefix = os.path.join(image_root, "")
    names = [_strip(d["file_name"], prefix).encode() for d in dicts]
    name_bytes, name_start = _ragged(names)
    annos = [a for d in dicts for a in d["annotations"]]
    ann_start = np.zeros(len(dicts) + 1, dtype=np.int64)
    np.cumsum([len(d["annotations"]) for d in dicts], out=ann_start[1:])
    seg = _SegPacker()
    for a in annos:
        seg.add(a["segmentation"])
    return {
        "image_id": np.asarray([d["image_id"] for d in dicts], dtype=np.int64),
        "height": np.asarray([d["height"] for d in dicts], dtype=np.int32),
        "width": np.asarray([d["width"] for d in dicts], dtype=np.int32),
        "name_bytes": name_bytes,
        "name_start": name_start,
        "ann_start": ann_start,
        "bbox": np.asarray([a["bbox"] for a in annos], dtype=np.float64).reshape(-1, 4),
        "category": np.asarray([a["category_id"] for a in annos], dtype=np.int32),
        "iscrowd": np.asarray([a["iscrowd"] for a in annos], dtype=np.uint8),
        **seg.arrays(),
    }


# ---------------------------------------------------------------- the cache file


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def write_index(path: str, arrays: dict[str, np.ndarray], header_extra: dict) -> None:
    """Write the cache file atomically (``utils.fs``: a fsynced temporary file renamed over
    ``path``), one array at a time. Array offsets in the header are relative to the data start,
    the header's end rounded up to ``ALIGN``."""
    arrays = {k: np.ascontiguousarray(a) for k, a in arrays.items()}
    entries, offset = {}, 0
    for name, a in arrays.items():
        crc = zlib.crc32(a.view(np.uint8).reshape(-1)) if a.size else 0
        entries[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset, "crc": crc}
        offset += _aligned(a.nbytes)
    header = json.dumps({**header_extra, "arrays": entries}).encode()
    head = MAGIC + struct.pack("<Q", len(header)) + header
    atomic_write_bytes(path, _padded(head, arrays.values()))


def _padded(head: bytes, arrays):
    """``head``, then each array's bytes (made one at a time), each followed by zeros up to the
    next multiple of ``ALIGN``."""
    for raw in itertools.chain([head], (a.tobytes() for a in arrays)):
        yield raw + b"\0" * (_aligned(len(raw)) - len(raw))


class CorruptCache(Exception):
    """The cache file cannot be trusted (truncated, bad header, checksum mismatch)."""


def read_index(path: str, *, verify: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """Header and memory-mapped arrays of a cache file.

    Raises:
        CorruptCache: wrong magic, unreadable header, truncated file, checksum mismatch.
    """
    mm = np.memmap(path, dtype=np.uint8, mode="r") if os.path.getsize(path) else b""
    if len(mm) < len(MAGIC) + 8 or bytes(mm[: len(MAGIC)]) != MAGIC:
        raise CorruptCache("not an index file (bad magic)")
    (n,) = struct.unpack("<Q", bytes(mm[len(MAGIC) : len(MAGIC) + 8]))
    try:
        header = json.loads(bytes(mm[len(MAGIC) + 8 : len(MAGIC) + 8 + n]))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CorruptCache("unreadable header") from None
    arrays, data = {}, _aligned(len(MAGIC) + 8 + n)
    for name, e in header["arrays"].items():
        dtype, shape = np.dtype(e["dtype"]), tuple(e["shape"])
        begin = data + e["offset"]
        end = begin + dtype.itemsize * int(np.prod(shape))
        if end > len(mm):
            raise CorruptCache(f"truncated ({len(mm)} bytes, array {name!r} ends at {end})")
        raw = mm[begin:end]
        if verify and e["crc"] != (zlib.crc32(raw) if raw.size else 0):
            raise CorruptCache(f"checksum mismatch in array {name!r}")
        arrays[name] = raw.view(dtype).reshape(shape)
    return header, arrays


# ---------------------------------------------------------------- the index


class DatasetIndex:
    """Read-only, list-like view of one dataset: ``index[i]`` is image ``i``'s dataset dict.

    Pickles as its file path (loader workers started by spawn re-map the file, never copy it).
    """

    def __init__(self, path: str, image_root: str, *, verify: bool = True):
        self.path, self.image_root = path, image_root
        self.header, self.a = read_index(path, verify=verify)

    def __reduce__(self):
        return _reopen, (self.path, self.image_root)

    def __len__(self) -> int:
        return len(self.a["image_id"])

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i):
        if isinstance(i, slice):
            return IndexSubset(self, np.arange(len(self))[i])
        i = range(len(self))[i]  # bounds and negative indices as a list
        a = self.a
        lo, hi = a["name_start"][i : i + 2]
        name = bytes(a["name_bytes"][lo:hi]).decode()
        s, e = (int(v) for v in a["ann_start"][i : i + 2])
        return {
            "file_name": os.path.join(self.image_root, name),
            "height": int(a["height"][i]),
            "width": int(a["width"][i]),
            "image_id": int(a["image_id"][i]),
            "annotations": [self._annotation(j) for j in range(s, e)],
        }

    def _annotation(self, j: int) -> dict:
        a = self.a
        return {
            "bbox": a["bbox"][j].tolist(),
            "category_id": int(a["category"][j]),
            "segmentation": self._segmentation(j),
            "iscrowd": int(a["iscrowd"][j]),
        }

    def _segmentation(self, j: int):
        a = self.a
        kind, (lo, hi) = int(a["seg_kind"][j]), a["seg_range"][j].tolist()
        if kind == SEG_NONE:
            return None
        if kind == SEG_POLYGON:
            starts = a["poly_start"][lo : hi + 1].tolist()
            return [a["poly_coords"][s:e].tolist() for s, e in zip(starts, starts[1:])]
        img = int(np.searchsorted(a["ann_start"], j, side="right")) - 1
        size = [int(a["height"][img]), int(a["width"][img])]
        if kind == SEG_RLE:
            return {"size": size, "counts": bytes(a["rle_bytes"][lo:hi]).decode("ascii")}
        return {"size": size, "counts": a["rle_runs"][lo:hi].tolist()}

    def aspect_flags(self) -> np.ndarray:
        """(N,) bool: width > height (landscape; squares are portrait, as Detectron2)."""
        return np.asarray(self.a["width"] > self.a["height"])

    def has_instances(self) -> np.ndarray:
        """(N,) bool: the image has at least one non-crowd annotation."""
        c = np.concatenate([[0], np.cumsum(self.a["iscrowd"] == 0)])
        start = self.a["ann_start"]
        return c[start[1:]] > c[start[:-1]]


def _reopen(path: str, image_root: str) -> DatasetIndex:
    return DatasetIndex(path, image_root, verify=False)


class IndexSubset:
    """Images ``rows`` (in this order) of a list-like dataset; list-like itself."""

    def __init__(self, base, rows: np.ndarray):
        self.base, self.rows = base, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i):
        if isinstance(i, slice):
            return IndexSubset(self.base, self.rows[i])
        return self.base[int(self.rows[range(len(self))[i]])]

    def aspect_flags(self) -> np.ndarray:
        return self.base.aspect_flags()[self.rows]

    def has_instances(self) -> np.ndarray:
        return self.base.has_instances()[self.rows]


def concat(parts: list) -> IndexSubset | DatasetIndex:
    """Several indexes as one list-like dataset (order kept)."""
    if len(parts) == 1:
        return parts[0]
    return IndexSubset(ConcatIndex(parts), np.arange(sum(len(p) for p in parts)))


class ConcatIndex:
    def __init__(self, parts: list):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> dict:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[k][i - int(self.starts[k])]

    def aspect_flags(self) -> np.ndarray:
        return np.concatenate([p.aspect_flags() for p in self.parts])

    def has_instances(self) -> np.ndarray:
        return np.concatenate([p.has_instances() for p in self.parts])


# ---------------------------------------------------------------- build or open, once per node


@contextlib.contextmanager
def file_lock(path: str):
    """Exclusive ``fcntl`` lock on ``path`` (created); released on exit or process death."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _info_from_header(header: dict) -> DatasetInfo:
    info = dict(header["info"])
    info["dropped"] = Counter(info["dropped"])
    return DatasetInfo(**info)


def _try_open(path: str, key: str, image_root: str, name: str, *, warn: bool):
    """The index at ``path`` if it exists, matches ``key`` and is intact; else None."""
    if not os.path.exists(path):
        return None
    try:
        idx = DatasetIndex(path, image_root)
    except (CorruptCache, OSError, ValueError, KeyError) as e:
        if warn:
            logger.warning("dataset %s: index cache %s is corrupt (%s); rebuilding", name, path, e)
        return None
    if idx.header.get("key") != key:
        if warn:
            logger.warning(
                "dataset %s: index cache %s is stale (the JSON changed); rebuilding", name, path
            )
        return None
    return idx


def open_index(
    json_file: str, image_root: str, name: str, cache_dir: str = ""
) -> tuple[DatasetIndex, DatasetInfo]:
    """The dataset's index, built from the validated JSON records once and then memory-mapped.

    Raises:
        DatasetError: the JSON is missing or invalid (as ``load_coco_json``), or the cache
            folder cannot be written.
    """
    if not os.path.isfile(json_file):
        raise DatasetError(f"annotation file not found: {json_file}")
    path, key = cache_path(json_file, cache_dir), json_key(json_file)
    idx = _try_open(path, key, image_root, name, warn=True)
    if idx is None:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with file_lock(path + ".lock"):
                idx = _try_open(path, key, image_root, name, warn=False)
                if idx is None:
                    idx = _build(json_file, image_root, name, path, key)
        except OSError as e:  # unwritable cache folder, full disk
            raise DatasetError(
                f"cannot write the dataset cache (DATASETS.CACHE_DIR): {e}"
            ) from None
    info = _info_from_header(idx.header)
    info.name, info.json_file, info.image_root = name, json_file, image_root
    log_warnings(info)  # a cached index warns as the JSON it was built from did
    return idx, info


def _build(json_file: str, image_root: str, name: str, path: str, key: str) -> DatasetIndex:
    import time

    start = time.perf_counter()
    dicts, info = load_coco_json(json_file, image_root, name, check_files=False)
    arrays = pack(dicts, image_root)
    del dicts
    meta = asdict(info)
    meta["dropped"] = dict(info.dropped)
    write_index(path, arrays, {"key": key, "json_file": json_file, "info": meta})
    idx = DatasetIndex(path, image_root)
    logger.info("dataset %s: built index %s in %.1f s", name, path, time.perf_counter() - start)
    return idx
