"""SQLAlchemy tables of the platform database.

Flows and the control API write these; gateways read routes, keys and experiment runs
and append metering rows (append-only, written in batches by the metering sink). SQLite in
the embedded platform, PostgreSQL in production: nothing here is dialect
specific.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class DeploymentStatus(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # a deploy that a newer intent overtook before its route switch


class Base(DeclarativeBase):
    pass


class Deployment(Base):
    """A built Bento of one model version, running (or not) on a target."""

    __tablename__ = "deployments"
    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    component: Mapped[str] = mapped_column(String(100), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(40))
    engine: Mapped[str] = mapped_column(String(40))
    bento_tag: Mapped[str | None] = mapped_column(String(200), nullable=True)
    target: Mapped[str] = mapped_column(String(40), default="local")
    status: Mapped[str] = mapped_column(String(20), default=DeploymentStatus.STARTING.value)
    load_time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Replica(Base):
    """One serving process of a deployment."""

    __tablename__ = "replicas"
    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"), index=True)
    url: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default=DeploymentStatus.STARTING.value)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ready_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # process start -> /readyz: the cold start
    # set when the replica is marked stopped or failed: its lifetime [started_at, stopped_at) is what a
    # dedicated replica costs (cost reports); added later, so create_schema adds it to older databases
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Route(Base):
    """Which deployment serves a component now (blue/green switches this row)."""

    __tablename__ = "routes"
    component: Mapped[str] = mapped_column(String(100), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"))
    intent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # the deploy intent that set it
    trigger: Mapped[str] = mapped_column(String(10), default="manual", server_default="manual")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class VariantRoute(Base):
    """Which deployment serves one experiment variant of a component (A/B and shadow routing).

    A separate table from ``routes`` so the serving route stays one row per
    component: a variant route exists only while an experiment needs it.
    """

    __tablename__ = "variant_routes"
    component: Mapped[str] = mapped_column(String(100), primary_key=True)
    variant: Mapped[str] = mapped_column(String(100), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"))
    intent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    trigger: Mapped[str] = mapped_column(String(10), default="manual", server_default="manual")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class CapacityFloor(Base):
    """A temporary minimum of replicas for a component (a scheduled warm-up), applied by the autoscaler."""

    __tablename__ = "capacity_floors"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    component: Mapped[str] = mapped_column(String(100), index=True)
    min_replicas: Mapped[int] = mapped_column(Integer)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    source: Mapped[str] = mapped_column(String(200), default="")  # e.g. the schedule or flow run that set it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeployClaim(Base):
    """First path (webhook, poll, CLI) to see a model version claims its deploy.

    The claim's id is the deploy's *intent*: a sequence in the order operators' commands were seen. A route
    remembers the intent that set it, and a deploy never replaces a route set by a newer intent. A claim is
    deleted when its deploy is superseded (the same command given again deploys again) and kept otherwise:
    the webhook and the poller see a change once, and the poller does not retry a broken version.
    """

    __tablename__ = "deploy_claims"
    # ids never reused (SQLite's AUTOINCREMENT): an intent must stay newer than every one before it
    __table_args__ = (UniqueConstraint("model_name", "model_version", "reason"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    component: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(80))
    source: Mapped[str] = mapped_column(String(40))
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Lease(Base):
    """A named lock with an expiry, held by one owner at a time (see ``store/leases.py``)."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[float] = mapped_column(Float)  # epoch seconds: compared in SQL, no time zone to get wrong


class GatewayReport(Base):
    """A follower gateway's latest load and held requests, for the autoscaler leader
    (``core/autoscaling/demand_reports.py``): one row per gateway process, replaced every tick."""

    __tablename__ = "gateway_reports"
    gateway_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    reported_at: Mapped[float] = mapped_column(Float)  # epoch seconds
    document: Mapped[str] = mapped_column(Text)  # JSON


class WebhookDelivery(Base):
    """Seen MLflow delivery ids: a replayed delivery is refused."""

    __tablename__ = "webhook_deliveries"
    delivery_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    event: Mapped[str] = mapped_column(String(80))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """A gateway API key: only its SHA-256 is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the public part of the key
    name: Mapped[str] = mapped_column(String(200), default="")
    tenant: Mapped[str] = mapped_column(String(100), index=True)
    scopes: Mapped[str] = mapped_column(String(200))  # comma-separated: invoke, admin
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ExperimentRun(Base):
    """One run of an experiment, from ``start-experiment`` until a promotion, a rollback or a conclusion.

    The gateway splits an enabled experiment's traffic unless its latest run has ended, so ending a run is how
    a flow stops a split without editing the user's ``experiments.yaml``.
    """

    __tablename__ = "experiment_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    experiment: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(20))  # running | promoted | rolled_back | concluded | stopped
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    winner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Feedback(Base):
    """A user's judgement of one request (``POST /v1/feedback``): the success metric of experiments."""

    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(100), index=True)
    tenant: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a bigint.
_Id = BigInteger().with_variant(Integer, "sqlite")


class MeteringRow(Base):
    """One component call (see :class:`compoundry.core.costs.records.MeteringRecord`)."""

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
    shadow: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # added later:
    # PlatformStore.create_schema adds it to older databases
    delivered: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    unit_key: Mapped[str | None] = mapped_column(String(110), nullable=True)  # an experiment's sticky key


metering_table = MeteringRow.__table__


class ConfigHistoryRow(Base):
    """What the config said of a component (mode, prices, sizing) or a pipeline (step dependencies), from when.

    Append-only: a row is added when a name's details differ from its latest row, so a cost report can
    price and decompose the metering of a component or pipeline that has since been removed
    (``compoundry/store/config_history.py``, docs/decisions/0031).
    """

    __tablename__ = "config_history"
    __table_args__ = (Index("ix_config_history_name", "kind", "name"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))  # component | pipeline
    name: Mapped[str] = mapped_column(String(100))
    details: Mapped[str] = mapped_column(Text)  # JSON (compoundry.core.costs.history.config_entries)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
