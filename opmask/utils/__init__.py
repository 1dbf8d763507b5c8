"""The lowest layer: file writes, process-group helpers, safe loading. Imports nothing else
from ``opmask``."""
