"""The lowest layer: errors and exit codes, file writes, process-group helpers, logging set-up,
safe loading, shipped files, text tables. Imports nothing else from ``opmask``."""
