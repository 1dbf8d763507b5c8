"""``opmask-train``: train or evaluate OPMask (Detectron2-style command line)."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from ..config import ConfigError, load_config
from ..data.coco import DatasetError
from ..data.splits import SplitError
from ..engine import exit_codes, preempt
from ..engine.checkpoint import CheckpointError
from ..engine.run_dir import RunFolderError, prepare, run_folder, setup_logging
from ..engine.train_loop import CheckpointedExit, NonFiniteLossError, evaluate_only, train
from ..modeling.weights import UnsafeWeightsError

logger = logging.getLogger("opmask.train")

EPILOG = """\
examples:
  opmask-train --config-file configs/shapes/opmask_R18_shapes.yaml --exp-id try1
  opmask-train --config-file configs/opmask_R50_FPN_130k.yaml --exp-id voc \\
      EXP.PS nvoc SOLVER.IMS_PER_BATCH 8 SOLVER.BASE_LR 0.01
  opmask-train --config-file ... --exp-id voc --resume       # continue from the newest checkpoint
  opmask-train --config-file ... --exp-id voc --eval-only    # evaluate the run's newest checkpoint

exit codes: 0 done; 1 bad input (config, dataset, weights, output folder); 2 bad command line;
3 non-finite loss; 75 stopped after a requested checkpoint (SIGUSR1 / preemption): rerun with --resume.
"""

# Errors a user fixes by changing the input: one line, exit code 1, no traceback.
INPUT_ERRORS = (ConfigError, DatasetError, SplitError, RunFolderError, CheckpointError,
                UnsafeWeightsError, FileNotFoundError, PermissionError, ValueError)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="opmask-train", description=__doc__, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config-file", required=True, metavar="FILE",
                   help="YAML config (may inherit others through _BASE_)")
    p.add_argument("--exp-id", default="run_01",
                   help="names the run folder OUTPUT_DIR/OPMask/{dataset}_{exp-id} (default run_01)")
    p.add_argument("--output-dir", metavar="DIR",
                   help="use exactly this run folder instead of the derived one")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in the folder from its newest valid checkpoint")
    p.add_argument("--eval-only", action="store_true",
                   help="only evaluate the run's newest checkpoint (or MODEL.WEIGHTS)")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides, e.g. SOLVER.BASE_LR 0.01 EXP.PS nvoc")
    return p


def run(args: argparse.Namespace) -> dict:
    """Load config, prepare the run folder, train or evaluate (in this process)."""
    cfg = load_config(args.config_file, args.opts)
    run_dir = run_folder(cfg, args.exp_id, args.output_dir)
    cfg = prepare(cfg, run_dir, resume=args.resume, eval_only=args.eval_only)
    setup_logging(run_dir)
    logger.info("Run folder: %s", run_dir)
    if args.eval_only:
        return evaluate_only(cfg, run_dir)
    preempt.install_signal_handlers()
    return train(cfg, run_dir, resume=args.resume)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        results = run(args)
    except NonFiniteLossError as e:
        logger.error("%s", e)
        print(f"opmask-train: error: {e}", file=sys.stderr)
        return exit_codes.NON_FINITE
    except CheckpointedExit as e:
        logger.info("%s; exiting with code %d to be resumed", e, exit_codes.CHECKPOINTED)
        return exit_codes.CHECKPOINTED
    except INPUT_ERRORS as e:
        print(f"opmask-train: error: {e}", file=sys.stderr)
        return exit_codes.ERROR
    summary = {k: v.get("AP") for k, v in results.items() if isinstance(v, dict) and "AP" in v}
    print(json.dumps(summary))
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
