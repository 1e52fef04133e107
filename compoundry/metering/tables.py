"""The ``metering_records`` table, on the platform database's ``Base``.

Append-only and write-heavy: one surrogate key and only the indexes the cost
report filters on (time range, then pipeline / component / tenant), plus the
request id for "what did this request cost". ``PlatformStore.create_schema``
imports this module so the table is created with the others.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from compoundry.store.tables import Base

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a bigint.
_Id = BigInteger().with_variant(Integer, "sqlite")


class MeteringRow(Base):
    """One component call (see :class:`compoundry.metering.records.MeteringRecord`)."""

    __tablename__ = "metering_records"
    __table_args__ = (
        Index("ix_metering_timestamp", "timestamp"),
        Index("ix_metering_pipeline_time", "pipeline_id", "timestamp"),
        Index("ix_metering_component_time", "component", "timestamp"),
        Index("ix_metering_tenant_time", "tenant", "timestamp"),
        Index("ix_metering_request", "request_id"),
    )

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    tenant: Mapped[str] = mapped_column(String(100))
    pipeline_id: Mapped[str] = mapped_column(String(100))
    request_id: Mapped[str] = mapped_column(String(100))
    step: Mapped[str | None] = mapped_column(String(100), nullable=True)
    component: Mapped[str] = mapped_column(String(100))
    variant: Mapped[str] = mapped_column(String(100))
    deployment_id: Mapped[str] = mapped_column(String(160))
    mode: Mapped[str] = mapped_column(String(20))
    latency_class: Mapped[str] = mapped_column(String(20))
    queue_ms: Mapped[float] = mapped_column(Float, default=0.0)
    cold_start_ms: Mapped[float] = mapped_column(Float, default=0.0)
    compute_ms: Mapped[float] = mapped_column(Float, default=0.0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str] = mapped_column(String(60))
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    shadow: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # added later: see
    # PlatformStore.create_schema, which adds it to older databases


metering_table = MeteringRow.__table__
