"""Defaults `tritonkit bench` shows in its --help: plain values, so the command line loads without the benchmarks."""

DEFAULT_PRICE_REALTIME_PER_HOUR = 0.17  # USD per instance-hour: an on-demand 4-vCPU instance
DEFAULT_PRICE_BATCH_PER_HOUR = 0.06  # the same instance as spot
SCENARIOS = ("single-stream", "dynamic-batching", "server", "offline")
OPT_IN_SCENARIOS = ("hybrid",)  # run only when named in --scenarios (benchmarks/hybrid.py; needs redis-server)
