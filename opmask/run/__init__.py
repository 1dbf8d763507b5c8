"""A run's life: the run folder (its layout, records, claiming, locking, settling the config),
the one entry point of a rank and the processes of a run (local spawn, several machines)."""
