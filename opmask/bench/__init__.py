"""Benchmarks: training/inference speed and FLOPs (``speed``), data loading, memory and
evaluation at scale (``loader``); run by ``opmask-bench``."""
