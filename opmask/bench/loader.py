"""Data-path benchmark: the memory-mapped index against the JSON-dict path, side by side.

Each measurement runs in a fresh Python process (``python -m opmask.bench.loader PATH ...``)
so nothing is shared or warm but the page cache: for each path, time to the first batch, the
main process's RSS growth from loading the dataset, and the RSS/PSS of the main process and of
each loader worker (forked, as on Linux by default) at the first batch and after K batches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from ..utils.table import format_table

MEMORY_FIELDS = {
    "Rss": "rss",
    "Pss": "pss",
    "Pss_Anon": "pss_anon",
    "Pss_File": "pss_file",
    "Pss_Shmem": "pss_shmem",
    "Anonymous": "anon",
    "Private_Dirty": "dirty",
}


def parse_smaps_rollup(text: str) -> dict[str, int | None]:
    """The ``MEMORY_FIELDS`` of a ``smaps_rollup`` text, in kB; a field the kernel does not report
    is ``None`` (``Pss_Anon``/``Pss_File``/``Pss_Shmem`` exist since Linux 5.8)."""
    out: dict[str, int | None] = dict.fromkeys(MEMORY_FIELDS.values())
    for line in text.splitlines():
        key = line.split(":")[0]
        if key in MEMORY_FIELDS:
            out[MEMORY_FIELDS[key]] = int(line.split()[1])
    return out


def memory_kb(pid: int) -> dict[str, int | None]:
    """kB of a process (``/proc/PID/smaps_rollup``): ``rss``, ``pss`` = ``pss_anon`` (its share
    of anonymous memory: Python objects, buffers, copy-on-write copies) + ``pss_file`` (its share
    of file-backed pages: libraries, the index's memory map) + ``pss_shmem`` (shared memory:
    batches that workers hand over), ``anon`` (anonymous memory), ``dirty`` (private dirty:
    what this process alone wrote, e.g. the copy-on-write copies a forked worker makes of its
    parent's objects)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return parse_smaps_rollup(f.read())


def maps_file(pid: int, path: str) -> bool:
    """Whether process ``pid`` has ``path`` memory-mapped (``/proc/PID/maps``)."""
    real = os.path.realpath(path)
    with open(f"/proc/{pid}/maps") as f:
        return any(line.rstrip("\n").endswith(" " + real) for line in f)


def children(pid: int) -> list[int]:
    """Child process ids of ``pid`` that are loader workers (not, e.g., multiprocessing's
    resource tracker, which a spawn-started loader may start as a child too)."""
    kids = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            kids += [int(x) for x in f.read().split()]
    return sorted(k for k in kids if not _is_resource_tracker(k))


def _is_resource_tracker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"resource_tracker" in f.read()
    except OSError:
        return False


def _snapshot(others: set[int]) -> dict:
    """This process's memory and its loader workers' (its children but ``others``, the ones it
    had before the loader started)."""
    me = os.getpid()
    workers = [k for k in children(me) if k not in others]
    return {"main": memory_kb(me), "workers": [memory_kb(k) for k in workers]}


def run_path(
    path: str,
    spec: str,
    workers: int,
    batches: int,
    cache_dir: str,
    mmap_threshold: int | None = None,
    hold: list | None = None,
) -> dict:
    """One path (``index`` or ``json``) in this process: load, build the loader, read batches
    (workers with DATALOADER.WORKER_MMAP_THRESHOLD = ``mmap_threshold``; None: the default).
    With a list ``hold``, the dataset and the loader's iterator are appended to it and so stay
    alive while the caller keeps it (a simulated rank is measured while it holds its data)."""
    import torch

    from ..config import get_cfg
    from ..data.build import build_train_loader
    from ..data.catalog import load_datasets

    torch.set_num_threads(1)
    cfg = get_cfg()
    cfg.merge_from_list(
        ["SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", workers, "MODEL.DEVICE", "cpu"]
    )
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", (320,), "INPUT.MAX_SIZE_TRAIN", 533])
    if mmap_threshold is not None:
        cfg.merge_from_list(["DATALOADER.WORKER_MMAP_THRESHOLD", mmap_threshold])
    mem0 = memory_kb(os.getpid())
    start = time.perf_counter()
    dicts, _ = load_datasets([spec], index=path == "index", cache_dir=cache_dir)
    loaded = time.perf_counter() - start
    mem1 = memory_kb(os.getpid())
    others = set(children(os.getpid()))
    it = iter(build_train_loader(cfg, dicts, seed=0, rank=0, world_size=1, start_iter=0))
    next(it)
    first = time.perf_counter() - start
    at_first = _snapshot(others)
    start = time.perf_counter()
    for _ in range(batches - 1):
        next(it)
    row = {
        "path": path,
        "label": path if mmap_threshold is None else f"{path}-{mmap_threshold}",
        "mmap_threshold": mmap_threshold,
        "load_s": loaded,
        "first_batch_s": first,
        "read_s": time.perf_counter() - start,
        "dataset_kb": {k: mem1[k] - mem0[k] for k in ("rss", "anon")},
        "first": at_first,
        "after": _snapshot(others),
        "batches": batches,
    }
    if hold is not None:
        hold += [dicts, it]
    return row


def _child(args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "opmask.bench.loader", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_time(spec: str, cache_dir: str) -> float:
    """Seconds to build the index from the JSON (cold: the cache file is removed first)."""
    from ..data.catalog import resolve
    from ..data.index import cache_path

    json_file = resolve(spec)[0]
    path = cache_path(json_file, cache_dir)
    if os.path.exists(path):
        os.remove(path)
    return _child(["build", spec, "0", "0", cache_dir])["build_s"]


# (path, workers' DATALOADER.WORKER_MMAP_THRESHOLD) that ``compare`` measures
COMPARED = (("index", None), ("index", 0), ("json", None))


def compare(spec: str, workers: int, batches: int, cache_dir: str) -> list[dict]:
    """Index build time, then the index path (warm cache), the index path with glibc's own mmap
    threshold in the workers (``index-0``), and the JSON path, each in a fresh process."""
    built = build_time(spec, cache_dir)
    args = [spec, str(workers), str(batches), cache_dir]
    rows = [_child([p, *args, *([] if t is None else [str(t)])]) for p, t in COMPARED]
    rows[0]["build_s"] = built
    return rows


def _mb(kb: float | None) -> str:
    return "?" if kb is None else f"{kb / 1024:.0f}"


def _signed_mb(kb: float | None) -> str:
    return "?" if kb is None else f"{kb / 1024:+.0f}"


def worker_growth(row: dict) -> list[dict[str, int]]:
    """Per worker, kB gained between the first and the last batch, per memory field. ``pss``
    grows also when a worker faults in pages its parent had already mapped (libraries, the index):
    shared pages, whose PSS moves from the parent to the worker; ``pss_anon`` and ``dirty``
    grow only with memory of the worker's own (copies, buffers). ``None`` where the kernel does
    not report the field."""
    pairs = zip(row["first"]["workers"], row["after"]["workers"], strict=True)
    return [{k: None if a[k] is None else b[k] - a[k] for k in a} for a, b in pairs]


def total_growth(row: dict) -> int:
    """kB of PSS that the main process and its workers together gained from the first to the
    last batch: the machine's cost of reading, where shared pages that move from the parent's
    PSS to a worker's cancel out."""
    return sum(
        b["pss"] - a["pss"]
        for a, b in zip(
            [row["first"]["main"], *row["first"]["workers"]],
            [row["after"]["main"], *row["after"]["workers"]],
            strict=True,
        )
    )


def format_rows(rows: list[dict]) -> list[str]:
    """One line per path and memory snapshot (MB), and per path the workers' growth. The time
    column holds the first batch's seconds (dataset load included) on the batch-1 line, the
    seconds of batches 2 to K on the batch-K line."""
    lines = [
        f"{'path':<8}{'build s':>9}{'1st/rest s':>12}{'data RSS/anon':>15}  "
        "batch: main RSS/PSS/anon; workers PSS/anon PSS/private-dirty each (MB)"
    ]
    for r in rows:
        for tag, snap in (("1", r["first"]), (str(r["batches"]), r["after"])):
            m = snap["main"]
            w = " ".join(
                f"{_mb(x['pss'])}/{_mb(x['pss_anon'])}/{_mb(x['dirty'])}" for x in snap["workers"]
            )
            build = f"{r['build_s']:.1f}" if "build_s" in r and tag == "1" else ""
            head = f"{r['first_batch_s'] if tag == '1' else r['read_s']:.2f}"
            d = r["dataset_kb"]
            data = f"{_mb(d['rss'])}/{_mb(d['anon'])}" if tag == "1" else ""
            lines.append(
                f"{_label(r):<8}{build:>9}{head:>12}{data:>15}  "
                f"{tag:>5}: {_mb(m['rss'])}/{_mb(m['pss'])}/{_mb(m['anon'])}; {w or '-'}"
            )
    for r in rows:
        grown = worker_growth(r)
        if grown:
            per = ", ".join(
                "/".join(_signed_mb(g[k]) for k in ("pss", "pss_anon", "dirty")) for g in grown
            )
            lines.append(
                f"{_label(r)}: workers' growth from batch 1 to {r['batches']}, "
                f"PSS/anon PSS/private-dirty MB: {per}; main + workers PSS "
                f"{_signed_mb(total_growth(r))}"
            )
    if any(r.get("mmap_threshold") == 0 for r in rows):
        lines.append("-0: workers with DATALOADER.WORKER_MMAP_THRESHOLD 0 (glibc's own threshold)")
    return lines


def _label(row: dict) -> str:
    return row.get("label", row["path"])


def hold_rank(spec: str, batches: int, cache_dir: str) -> None:
    """A simulated rank, in two phases driven over stdin/stdout so that the parent measures every
    rank at the same moments: import what training imports and say ``imported``; on a line from
    stdin, load the dataset from the index (warm cache), read ``batches`` batches in this process
    and say ``ready``; then stay alive, still holding the dataset and its loader (the index's
    memory map), until stdin closes."""
    import torch  # noqa: F401  (what every rank has loaded before it reads data)

    from ..data import build  # noqa: F401

    print(json.dumps({"imported": os.getpid()}), flush=True)
    sys.stdin.readline()
    held: list = []
    run_path("index", spec, 0, batches, cache_dir, hold=held)
    print(json.dumps({"ready": os.getpid()}), flush=True)
    sys.stdin.read()


def _sum_memory(pids: list[int]) -> dict[str, int]:
    totals = {"rss": 0, "pss": 0, "anon": 0}
    for pid in pids:
        mem = memory_kb(pid)
        for k in totals:
            totals[k] += mem[k]
    return totals


def _expect(proc: subprocess.Popen, word: str) -> None:
    line = proc.stdout.readline()
    if word not in line:
        raise RuntimeError(f"simulated rank {proc.pid} exited with {proc.wait()} before {word}")


def simulated_ranks(spec: str, ranks: int, batches: int, cache_dir: str) -> dict[str, dict]:
    """``ranks`` processes that each load the index path and read ``batches`` batches, measured
    alive at once, summed over the processes (kB): ``base`` after the imports, ``after`` at the
    last batch, and ``data`` = after - base (what loading and reading cost the machine). ``pss``
    splits shared pages (the index's memory map, the libraries) between their users, so its sum
    is the machine's real cost; ``rss`` counts shared pages once per process. ``mapped``: how
    many of the processes had the index file mapped when measured. The cache is built
    beforehand (``build_time``)."""
    from ..data.catalog import resolve
    from ..data.index import cache_path

    index_file = cache_path(resolve(spec)[0], cache_dir)
    cmd = [sys.executable, "-m", "opmask.bench.loader", "rank", spec, "0", str(batches)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [*cmd, cache_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(ranks)
    ]
    pids = [p.pid for p in procs]
    try:
        for p in procs:
            _expect(p, "imported")
        base = _sum_memory(pids)
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            _expect(p, "ready")
        after = _sum_memory(pids)
        return {
            "base": base,
            "after": after,
            "data": {k: after[k] - base[k] for k in base},
            "mapped": sum(maps_file(pid, index_file) for pid in pids),
        }
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
        for p in procs:
            p.wait()


def format_ranks(ranks: dict[int, dict]) -> str:
    """One line per number of ranks: PSS after the imports, at the last batch, and the
    difference (the data's cost: the index's pages, split between the ranks that map them, and
    each rank's batch buffers); the last lines compare the largest number with one rank, for the
    data and for the whole processes (which include torch and the interpreter, ~0.4 GB each)."""
    rows = [
        [n, *(_mb(v) for v in (r["base"]["pss"], r["after"]["pss"], r["data"]["pss"]))]
        + [_mb(r["data"]["anon"])]
        for n, r in sorted(ranks.items())
    ]
    header = ["ranks", "PSS base", "PSS after", "data PSS", "data anon"]
    lines = format_table(header, rows, [5, 10, 11, 10, 11], align=">>>>>").split("\n")
    if len(ranks) > 1:
        n = max(ranks)
        data = ranks[n]["data"]["pss"] / ranks[1]["data"]["pss"]
        whole = ranks[n]["after"]["pss"] / ranks[1]["after"]["pss"]
        lines.append(f"{n} ranks / 1 rank, data PSS: {data:.2f}x")
        lines.append(f"{n} ranks / 1 rank, whole processes' PSS at the last batch: {whole:.2f}x")
    return "\n".join(lines)


def _main(argv: list[str]) -> None:
    path, spec, workers, batches, cache_dir, *threshold = argv
    if path == "rank":
        hold_rank(spec, int(batches), cache_dir)
        return
    if path == "build":
        from ..data.catalog import load_dataset

        start = time.perf_counter()
        load_dataset(spec, index=True, cache_dir=cache_dir)
        print(json.dumps({"build_s": time.perf_counter() - start}))
        return
    mmap_threshold = int(threshold[0]) if threshold else None
    print(json.dumps(run_path(path, spec, int(workers), int(batches), cache_dir, mmap_threshold)))


def synthetic_detections(gt: dict, per_image: int, seed: int = 0) -> list[dict]:
    """``per_image`` scored detections per image: its GT boxes jittered, then random boxes, each
    with the compressed RLE of its box as the mask."""
    import numpy as np
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    by_image: dict = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    out = []
    for img in gt["images"]:
        h, w = img["height"], img["width"]
        dets = [(a["bbox"], a["category_id"]) for a in by_image.get(img["id"], [])][:per_image]
        for _ in range(per_image - len(dets)):
            bw, bh = rng.uniform(8, w / 4), rng.uniform(8, h / 4)
            box = [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh]
            dets.append((box, cats[int(rng.integers(len(cats)))]))
        boxes = np.array([b for b, _ in dets]) + rng.normal(0, 2, (len(dets), 4))
        polys = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh] for x, y, bw, bh in boxes]
        for (x, y, bw, bh), (_, cat), rle in zip(boxes, dets, mask_util.frPyObjects(polys, h, w)):
            out.append(
                {
                    "image_id": img["id"],
                    "category_id": cat,
                    "bbox": [float(x), float(y), float(bw), float(bh)],
                    "score": float(rng.random()),
                    "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                }
            )
    return out


def eval_times(folder: str, images: int, per_image: int) -> list[tuple[str, float, float]]:
    """(backend, seconds, segm AP) of ``evaluate_results`` on a coco-like set's detections."""
    from ..data.cocolike import write_coco_like
    from ..evaluation.coco_eval import EVALUATORS, evaluate_results

    gt_json = write_coco_like(folder, images)
    with open(gt_json) as f:
        dets = synthetic_detections(json.load(f), per_image)
    rows = []
    for backend in EVALUATORS:
        start = time.perf_counter()
        res = evaluate_results(gt_json, dets, [1, 2, 3], backend)
        rows.append((backend, time.perf_counter() - start, res["segm"]["AP"]))
    return rows


if __name__ == "__main__":
    _main(sys.argv[1:])
