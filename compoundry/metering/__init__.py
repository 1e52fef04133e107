"""Metering: one record per component call, written off the hot path, summed for cost reports."""

from compoundry.metering.records import (
    FALLBACK,
    OK,
    SHED,
    MeteringRecord,
    error_outcome,
    price_call,
    replica_hours_cost,
    share_replica_cost,
)
from compoundry.metering.report import CostTotal, cost_by
from compoundry.metering.sink import MeteringSink, SinkStats

__all__ = [
    "FALLBACK", "OK", "SHED", "CostTotal", "MeteringRecord", "MeteringSink", "SinkStats",
    "cost_by", "error_outcome", "price_call", "replica_hours_cost", "share_replica_cost",
]
