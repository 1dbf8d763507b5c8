#!/usr/bin/env python3
"""Crash stress for checkpoints: SIGKILL opmask-train at random moments (during training and
during checkpoint writing), then check that the newest valid checkpoint loads and that at most
two checkpoint periods were lost (one background write may still be running); finally resume
to the end and check metrics.json has no duplicate and no missing step, and that no ``.tmp-*``
fragment of a killed write is left. Exits non-zero on the first violation.

    OPMASK_DATASETS=... python scripts/kill_stress.py --trials 100 --out /tmp/stress

The test suite runs it with 10 trials (tests/train/test_checkpoint.py).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the checkout's opmask, also where it is not installed

from opmask.run.folder import RunFolder  # noqa: E402
from opmask.train.events import ITERATION  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "shapes", "opmask_R18_shapes.yaml")

# A small shapes model (iterations of a fraction of a second on 2 cores), without evaluation or
# visualisation, checkpointing every iteration.
SMALL = [
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "MODEL.ROI_BOX_HEAD.CONV_DIM",
    "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "16",
    "INPUT.MIN_SIZE_TRAIN",
    "(96,)",
    "INPUT.MIN_SIZE_TEST",
    "96",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.WARMUP_ITERS",
    "2",
    "SOLVER.STEPS",
    "(4,)",
    "SOLVER.BASE_LR",
    "0.01",
    "DATALOADER.NUM_WORKERS",
    "0",
    "EXP.PRINT_PERIOD",
    "2",
    "DATASETS.TEST",
    "()",
    "VIS_PERIOD",
    "0",
    "SOLVER.CHECKPOINT_PERIOD",
    "1",
    "SOLVER.MAX_TO_KEEP",
    "3",
]


def logged_iterations(run: str) -> list[int]:
    """Iterations in metrics.json (a line torn by the kill is skipped; resume purges it)."""
    return [m[ITERATION] for m in RunFolder(run).read_metrics() if ITERATION in m]


def command(run: str, resume: bool, max_iter: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "opmask.cli.train",
        "--config-file",
        CONFIG,
        "--output",
        run,
        *(["--resume"] if resume else []),
        *SMALL,
        "SOLVER.MAX_ITER",
        str(max_iter),
    ]


def fail(msg: str) -> None:
    print(f"FAIL: {msg}")
    sys.exit(1)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--out", required=True, help="work folder (the run goes to OUT/run)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng, run, start = random.Random(args.seed), os.path.join(args.out, "run"), 0
    folder = RunFolder(run)
    for trial in range(args.trials):
        log = open(os.path.join(args.out, f"trial{trial}.log"), "w")
        proc = subprocess.Popen(command(run, trial > 0, 100000), stdout=log, stderr=log)
        deadline = time.time() + 120
        while not [i for i in logged_iterations(run) if i >= start]:
            if proc.poll() is not None or time.time() > deadline:
                tail = open(log.name).read()[-1500:]
                fail(f"trial {trial}: training did not progress (exit {proc.poll()}):\n{tail}")
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
        found = folder.latest_checkpoint()
        if found is None:
            fail(f"trial {trial}: no valid checkpoint")
        logged = max(logged_iterations(run))
        # Checkpoints are written in the background while training goes on: the write of the
        # newest one may still run when the next step has logged, so a kill loses at most
        # two checkpoint periods (here 2 iterations).
        if logged - found[1]["iteration"] > 2:
            fail(f"trial {trial}: logged {logged}, checkpoint {found[1]['iteration']}")
        start = found[1]["iteration"] + 1
        print(
            f"trial {trial}: killed after iteration {logged}, newest valid checkpoint "
            f"{os.path.basename(found[0])} (iteration {found[1]['iteration']})",
            flush=True,
        )
    end = start + 2
    done = subprocess.run(command(run, True, end), capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"final resume exited {done.returncode}: {done.stderr[-1000:]}")
    if logged_iterations(run) != list(range(end)):
        fail(f"metrics.json iterations are not 0..{end - 1}: {logged_iterations(run)}")
    fragments = [
        os.path.join(d, n) for d, _, ns in os.walk(run) for n in ns if n.startswith(".tmp-")
    ]
    if fragments:
        fail(f"temporary fragments of killed writers were left: {fragments}")
    print(
        f"{args.trials}/{args.trials} trials resumed from a valid checkpoint; "
        f"final resume reached iteration {end - 1} with no duplicate or missing step "
        "and no temporary fragment left"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
