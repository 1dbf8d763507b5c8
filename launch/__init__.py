"""Everything SLURM/submitit: submit, sweeps, requeue, status. ``opmask`` never imports this."""
