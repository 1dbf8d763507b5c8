"""Console scripts: each parses its arguments and calls the library (``opmask-demo`` also runs its
three trainings); errors and exit codes go through ``opmask.utils.exit_codes.run_command``."""
