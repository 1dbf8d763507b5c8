"""Exit codes of ``opmask-train`` (documented in README; the SLURM launcher relies on them)."""

OK = 0  # training / evaluation finished
ERROR = 1  # bad input (config, dataset, weights, output folder): fix and rerun; never requeue
USAGE = 2  # bad command line (argparse)
NON_FINITE = 3  # a loss became NaN/inf: the run stopped; the last checkpoint is intact
CHECKPOINTED = 75  # "checkpoint now" was honoured (preemption): resume with --resume
