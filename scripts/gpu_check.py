"""The GPU check: one prepared run that any CUDA machine does in about five minutes, with no
dataset download, writing one Markdown report. ``--device cpu`` runs a CI-sized form of the same
steps (tests/scripts/test_gpu_check.py runs it in CI).

Steps, each appended to the report as soon as it ends (a time-out still leaves the report):
 1. The shapes configs trained on the device with fp16 and bf16 AMP: every loss finite, and the
    mean total loss of the last fifth below that of the first fifth; evaluation on the device.
 2. A run stopped by SIGUSR1 (exit 75) and resumed: its losses after the resume against an
    uninterrupted run's, to a stated tolerance (bitwise on CPU).
 3. A process group at world size 1 (NCCL on CUDA, gloo on CPU) with SyncBN in the heads,
    training and evaluating.
 4. ``opmask-bench --matrix``: baseline / OPMask R50-FPN x precision x memory format, torchvision
    reference, img/s, peak memory, TFLOP/s, MFU (rows streamed into the report as measured).
Exit code 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from importlib import metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the checkout's opmask, also where it is not installed

from opmask.run.folder import RunFolder  # noqa: E402
from opmask.train.events import TOTAL_LOSS  # noqa: E402

SHAPES = os.path.join(REPO, "configs", "shapes", "opmask_R18_shapes.yaml")


class Report:
    def __init__(self, path: str):
        self.path, self.failed = path, []
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        open(path, "w").close()

    def add(self, text: str) -> None:
        print(text, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text + "\n")

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.add(f"- {'PASS' if ok else 'FAIL'} — {name}: {detail}")
        if not ok:
            self.failed.append(name)


def _run(cmd: list[str], env: dict, timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def _train_cmd(run: str, opts: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "opmask.cli.train", "--config-file", SHAPES,
            "--output", run, *extra, *opts]  # fmt: skip


def _metrics(run: str) -> list[dict]:
    return [m for m in RunFolder(run).read_metrics() if TOTAL_LOSS in m]


def _results(run: str) -> dict:
    return RunFolder(run).read_results()


def _tail(p: subprocess.CompletedProcess) -> str:
    return (p.stderr or p.stdout or "").strip().splitlines()[-1:] or ["(no output)"]


def matrix(rep: Report, env: dict, a) -> None:
    rep.add("\n## 4. Benchmark matrix (`opmask-bench --matrix`)\n")
    cmd = [sys.executable, "-m", "opmask.cli.bench", "--matrix", "--device", a.device,
           "--height", str(a.height), "--width", str(a.width), "--batch", str(a.batch),
           "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--precisions", a.precisions]  # fmt: skip
    if not a.full_matrix:  # CPU-sized: NCHW only, 32 RoIs per image, no compiled row
        cmd += ["--no-compile", "--no-channels-last", "--roi-batch", "32"]
    rep.add("```")
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    deadline, rows = time.time() + a.matrix_timeout, 0
    for line in proc.stdout:  # streamed: a time-out keeps the rows measured so far
        rep.add(line.rstrip())
        rows += line.startswith("| ") and "---" not in line
        if time.time() > deadline:
            proc.kill()
            break
    code = proc.wait()
    rep.add("```")
    rep.check("matrix", code == 0 and rows > 1, f"{rows - 1} rows, exit {code}")


def amp_training(rep: Report, env: dict, a, base: list[str]) -> None:
    rep.add("\n## 1. Shapes training with AMP, evaluation on the device\n")
    for dtype in a.amp:
        run = os.path.join(a.work, f"amp_{dtype}")
        amp = ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", dtype] if dtype != "off" else []
        opts = base + amp
        t = time.perf_counter()
        p = _run(_train_cmd(run, opts + ["SOLVER.MAX_ITER", str(a.iters)]), env, a.step_timeout)
        secs = time.perf_counter() - t
        losses = [m["total_loss"] for m in _metrics(run)]
        fifth = max(1, len(losses) // 5)
        first, last = (
            statistics.fmean(losses[:fifth] or [0]),
            statistics.fmean(losses[-fifth:] or [0]),
        )
        finite = all(v == v and abs(v) != float("inf") for v in losses)
        res = _results(run)
        ap = {
            k: round(v.get("AP", float("nan")), 2)
            for k, v in res.items()
            if isinstance(v, dict) and "AP" in v
        }
        ok = p.returncode == 0 and len(losses) == a.iters and finite and last < first and bool(ap)
        rep.check(
            f"{dtype} AMP, {a.iters} iterations"
            if dtype != "off"
            else f"fp32, {a.iters} iterations",
            ok,
            f"exit {p.returncode}, {secs:.0f} s, {len(losses)} losses all finite={finite}, mean "
            f"total loss first fifth {first:.3f} -> last fifth {last:.3f}; evaluation AP {ap}"
            + ("" if p.returncode == 0 else f"; {_tail(p)}"),
        )


def resume(rep: Report, env: dict, a, base: list[str]) -> None:
    rep.add("\n## 2. SIGUSR1, exit 75, resume\n")
    opts = base + ["SOLVER.MAX_ITER", str(a.resume_iters), "TEST.EVAL_PERIOD", "0"]
    ref, cut = os.path.join(a.work, "uninterrupted"), os.path.join(a.work, "interrupted")
    twin = os.path.join(a.work, "uninterrupted_again")
    p = _run(_train_cmd(ref, opts), env, a.step_timeout)
    _run(_train_cmd(twin, opts), env, a.step_timeout)  # run-to-run noise of the device's kernels
    proc = subprocess.Popen(_train_cmd(cut, opts), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + a.step_timeout
    while (
        len(_metrics(cut)) < a.resume_iters // 3 and proc.poll() is None and time.time() < deadline
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=a.step_timeout)
    stopped_at = len(_metrics(cut))
    p2 = _run(_train_cmd(cut, opts, "--resume"), env, a.step_timeout)
    want = {m["iteration"]: m["total_loss"] for m in _metrics(ref)}
    got = {m["iteration"]: m["total_loss"] for m in _metrics(cut) if m["iteration"] >= stopped_at}
    rel = lambda x, y: abs(x - y) / max(abs(y), 1e-12)  # noqa: E731
    diffs = [rel(got[i], want[i]) for i in got if i in want]
    again = {m["iteration"]: m["total_loss"] for m in _metrics(twin)}
    noise = max((rel(again[i], want[i]) for i in got if i in want and i in again), default=0.0)
    worst = max(diffs, default=float("nan"))
    tol = max(a.resume_tol, 2 * noise)
    ok = (
        p.returncode == 0 and proc.returncode == 75 and p2.returncode == 0
        and len(diffs) == a.resume_iters - stopped_at and worst <= tol
    )  # fmt: skip
    rep.check(
        "SIGUSR1 -> checkpoint -> resume",
        ok,
        f"stopped with exit {proc.returncode} after iteration {stopped_at - 1}, resumed exit "
        f"{p2.returncode}; {len(diffs)} later iterations compared with the uninterrupted run: max "
        f"relative total-loss difference {worst:.2e}; two uninterrupted runs differ by up to "
        f"{noise:.2e} over the same iterations (tolerance max({a.resume_tol:g}, 2 x that))"
        + ("" if p2.returncode == 0 else f"; {_tail(p2)}"),
    )


def process_group(rep: Report, env: dict, a, base: list[str]) -> None:
    rep.add("\n## 3. Process group at world size 1 with SyncBN heads\n")
    run = os.path.join(a.work, "process_group")
    opts = base + ["SOLVER.MAX_ITER", "10", "MODEL.ROI_BOX_HEAD.NORM", "SyncBN",
                   "MODEL.ROI_MASK_HEAD.NORM", "SyncBN"]  # fmt: skip
    backend = "nccl" if a.device == "cuda" else "gloo"
    # opmask-train makes no process group for one process: make one first (as a multi-GPU run
    # has), then run opmask-train's main in it
    code = (
        "import sys, torch, torch.distributed as dist\n"
        f"if {backend!r} == 'nccl': torch.cuda.set_device(0)\n"
        f"dist.init_process_group({backend!r}, init_method='tcp://127.0.0.1:29533', "
        "world_size=1, rank=0)\n"
        "from opmask.cli.train import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    cmd = [sys.executable, "-c", code, "--config-file", SHAPES, "--output", run, *opts]
    p = _run(cmd, env, a.step_timeout)
    log_file = RunFolder(run).log()
    log = open(log_file, encoding="utf-8").read() if os.path.isfile(log_file) else ""
    ok = p.returncode == 0 and len(_metrics(run)) == 10 and bool(_results(run))
    rep.check(
        f"{backend} at world size 1 with SyncBN",
        ok and f"backend {backend}" in log,
        f"exit {p.returncode}, {len(_metrics(run))} iterations, evaluated: {bool(_results(run))}, "
        f"log names backend {backend}: {f'backend {backend}' in log}"
        + ("" if p.returncode == 0 else f"; {_tail(p)}"),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--report", default="gpu_check.md", help="Markdown report path")
    p.add_argument("--work", default="output/gpu_check", help="scratch folder (data and runs)")
    p.add_argument("--quick", action="store_true", help="CI-sized: tiny sizes and few steps")
    p.add_argument("--only", default="matrix,amp_training,resume,process_group",
                   help="comma-separated subset of the steps")  # fmt: skip
    a = p.parse_args(argv)
    gpu = a.device == "cuda" and not a.quick
    a.height, a.width, a.batch = (800, 1333, 2) if gpu else (128, 160, 1)
    a.steps, a.warmup = (4, 2) if gpu else (1, 1)
    a.precisions = "fp32,tf32,fp16,bf16" if a.device == "cuda" else "fp32"
    a.full_matrix = gpu
    a.iters, a.resume_iters = (200, 60) if gpu else (8, 6)
    # bf16 autocast on CPU is ~30x slower than fp32 here: the CPU form checks the plumbing in fp32
    a.amp = ("float16", "bfloat16") if a.device == "cuda" else ("off",)
    a.resume_tol = 5e-2 if a.device == "cuda" else 0.0
    a.matrix_timeout, a.step_timeout = (240, 150) if gpu else (600, 300)
    os.makedirs(a.work, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OPMASK_DATASETS=os.path.join(a.work, "datasets"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    rep = Report(a.report)
    if a.device == "cuda":
        import torch

        dev = torch.cuda.get_device_name(0)
        versions = f"torch {torch.__version__}, CUDA {torch.version.cuda}"
    else:  # each step's processes import torch; this one need not (~4.5 s of CPU a step)
        dev, versions = "cpu", f"torch {metadata.version('torch')}"
    rep.add(f"# GPU check ({'quick' if a.quick else 'full'}) on {dev}\n")
    rep.add(f"{versions}, {os.cpu_count()} CPUs, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")  # fmt: skip
    t0 = time.perf_counter()
    data = [sys.executable, "-m", "opmask.cli.data", "shapes", "--overwrite",
            "--num-train", "200" if gpu else "12", "--num-val", "50" if gpu else "6"]  # fmt: skip
    g = _run(data, env, 300)
    if g.returncode != 0:
        rep.check("synthetic data", False, _tail(g)[0])
        return 1
    base = ["MODEL.DEVICE", a.device, "DATALOADER.NUM_WORKERS", "4" if gpu else "0",
            "SOLVER.CHECKPOINT_PERIOD", "100000", "EXP.PRINT_PERIOD", "20", "VIS_PERIOD", "0",
            "SEED", "7"]  # fmt: skip
    if not gpu:
        base += ["INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MIN_SIZE_TEST", "96",
                 "SOLVER.IMS_PER_BATCH", "2"]  # fmt: skip
    steps = (amp_training, resume, process_group, matrix)  # the matrix streams rows: last
    for step in [f for f in steps if f.__name__ in a.only.split(",")]:
        try:
            step(rep, env, a) if step is matrix else step(rep, env, a, base)
        except subprocess.TimeoutExpired as e:
            rep.check(step.__name__, False, f"timed out after {e.timeout:.0f} s")
    verdict = "all checks passed" if not rep.failed else f"FAILED: {', '.join(rep.failed)}"
    rep.add(f"\n**{verdict}** in {time.perf_counter() - t0:.0f} s")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
