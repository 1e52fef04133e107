"""Metering records, per-call prices, the cost model and the latency decomposition of pipelines."""
