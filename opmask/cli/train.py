"""``opmask-train``: train or evaluate OPMask (Detectron2-style command line)."""

from __future__ import annotations

import argparse
import os
import re
import sys

from ..run import entry
from ..utils import exit_codes
from .flags import add_overrides, add_run_flags, count
from .parser import OneLineParser

PROG = "opmask-train"

EPILOG = """\
examples:
  opmask-train --config-file configs/shapes/opmask_R18_shapes.yaml --exp-id try1
  opmask-train --config-file configs/opmask_R50_FPN_130k.yaml --exp-id voc \\
      EXP.PS nvoc SOLVER.IMS_PER_BATCH 8 SOLVER.BASE_LR 0.01
  opmask-train --config-file ... --exp-id voc --resume       # continue from the newest checkpoint
  opmask-train --config-file ... --exp-id voc --eval-only    # evaluate the run's newest checkpoint
  opmask-train --config-file ... --num-gpus 8                 # 8 local ranks (NCCL; gloo on CPU)
  torchrun --nproc-per-node 4 -m opmask.cli.train --config-file ...   # env:// initialisation

Flags go before the KEY VALUE overrides (a flag after them is refused: exit 2).

exit codes: 0 done; 1 bad input (config, dataset, image, weights, output folder); 2 bad command
line; 3 non-finite loss; 4 internal error (a bug: traceback on stderr); 5 (a rank only) stopped
because another rank failed; after a checkpoint at the next step boundary: 75 SIGUSR1/preemption
(requeue), 130 Ctrl-C (a second Ctrl-C aborts at once), 143 SIGTERM -- continue with --resume;
128+N a rank was killed by signal N.
"""


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description=__doc__.replace("``", ""),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_flags(p)
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="only evaluate the run's newest checkpoint (or MODEL.WEIGHTS)",
    )
    d = p.add_argument_group("distributed (SOLVER.IMS_PER_BATCH is the global batch)")
    d.add_argument(
        "--num-gpus",
        type=count(1),
        default=1,
        metavar="N",
        help="processes per machine: one per GPU, or N CPU processes with gloo",
    )
    d.add_argument("--num-machines", type=count(1), default=1, help="machines taking part")
    d.add_argument("--machine-rank", type=count(0), default=0, help="this machine's rank (0-based)")
    d.add_argument(
        "--dist-url",
        default="auto",
        help="tcp://HOST:PORT of machine 0 (auto: a free local port, one machine)",
    )
    add_overrides(p)
    return p


TCP_URL = re.compile(r"tcp://(\[[^]]+\]|[^:/]+):\d+")  # tcp://HOST:PORT, HOST may be [IPv6]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line (exit 2 with one line on a bad flag)."""
    p = parser()
    args = p.parse_args(argv)
    if args.machine_rank >= args.num_machines:
        p.error(f"argument --machine-rank: {args.machine_rank} is not below --num-machines")
    if args.num_machines > 1 and args.dist_url == "auto":
        p.error("argument --dist-url: machine 0's tcp://HOST:PORT is needed with --num-machines")
    if args.dist_url.startswith("tcp://") and not TCP_URL.fullmatch(args.dist_url):
        p.error(f"argument --dist-url: expected tcp://HOST:PORT, got {args.dist_url!r}")
    return args


def _train(args: argparse.Namespace) -> int:
    """Prepare the run once here, then train or evaluate on every rank; the exit code."""
    cfg, run_dir = entry.load(
        args.config_file, args.opts, exp_id=args.exp_id, output_dir=args.output_dir
    )
    cfg, lock = entry.prepare(
        cfg,
        run_dir,
        resume=args.resume,
        eval_only=args.eval_only,
        world_size=int(os.environ.get("WORLD_SIZE", args.num_gpus * args.num_machines)),
        machine_rank=args.machine_rank,
        local_procs=args.num_gpus,
    )
    from ..run.spawn import launch  # torch: only once the inputs passed (a refusal is instant)

    try:
        code = launch(
            entry.rank_main,
            (cfg.dump(), run_dir, args.resume, args.eval_only),
            num_procs=args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            device=cfg.MODEL.DEVICE,
            timeout_min=args.dist_timeout,
        )
    except BaseException as e:
        entry.finish(lock, exit_codes.code_for(e))  # bad input: clean up; a bug: keep it
        raise
    return entry.finish(lock, code)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return exit_codes.run_command(PROG, _train, args)


if __name__ == "__main__":
    sys.exit(main())
