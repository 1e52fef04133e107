"""Metering: the batched writer that takes one record per component call off the hot path into the database.

The record and its pricing are pure (:mod:`compoundry.core.costs.records`); the table is
:class:`compoundry.store.tables.MeteringRow`.
"""

from compoundry.metering.sink import MeteringSink, SinkStats

__all__ = ["MeteringSink", "SinkStats"]
