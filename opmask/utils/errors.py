"""The error taxonomy. ``OPMaskInputError``: the user's input is wrong (config, dataset, weights,
split, run folder, launch options); every command reports it in one line with exit code 1, and
the SLURM launcher never requeues it. Any other exception is a bug: it is reported with its
traceback and a different exit code."""

from __future__ import annotations


class OPMaskInputError(ValueError):
    """Bad input, named in the message (fix the input and rerun)."""
