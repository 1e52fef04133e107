"""`PlatformStore`: the one write path for platform state, and the route read.

Every method opens a short transaction; callers never hold sessions. The
gateway calls only :meth:`routes` and only from a background refresher, so the
request path never waits on the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import create_engine, event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from compoundry.store.tables import (
    Base,
    DeployClaim,
    Deployment,
    DeploymentStatus,
    Replica,
    Route,
    WebhookDelivery,
)


@dataclass(frozen=True)
class ReplicaView:
    id: str
    url: str
    pid: int | None = None


@dataclass(frozen=True)
class RouteView:
    """What a gateway needs to send a component call: the live replicas."""

    component: str
    deployment_id: str
    model_name: str
    model_version: str
    engine: str
    replicas: tuple[ReplicaView, ...]


@dataclass(frozen=True)
class DeploymentView:
    id: str
    component: str
    model_name: str
    model_version: str
    engine: str
    bento_tag: str | None
    status: str
    load_time_s: float | None
    error: str | None
    routed: bool
    replicas: tuple[ReplicaView, ...]


class PlatformStore:
    def __init__(self, database_url: str):
        connect_args = {"timeout": 30} if database_url.startswith("sqlite") else {}
        self.engine = create_engine(database_url, connect_args=connect_args, pool_pre_ping=True)
        if database_url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_wal)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        import compoundry.metering.tables  # noqa: F401  (registers metering_records on Base)
        Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- deploy claims & webhook deliveries --------------------------------
    def claim_deploy(self, model_name: str, version: str, reason: str, source: str) -> bool:
        """True for the first caller only: a version is deployed once per reason."""
        return self._insert_once(
            DeployClaim(model_name=model_name, model_version=str(version), reason=reason, source=source)
        )

    def attach_flow_run(self, model_name: str, version: str, reason: str, flow_run_id: str) -> None:
        with self._session.begin() as s:
            claim = s.scalar(
                select(DeployClaim).filter_by(model_name=model_name, model_version=str(version), reason=reason)
            )
            if claim is not None:
                claim.flow_run_id = flow_run_id

    def release_claim(self, model_name: str, version: str, reason: str) -> None:
        """Undo a claim whose flow run could not even be created, so a retry can claim it."""
        with self._session.begin() as s:
            claim = s.scalar(
                select(DeployClaim).filter_by(model_name=model_name, model_version=str(version), reason=reason)
            )
            if claim is not None:
                s.delete(claim)

    def record_delivery(self, delivery_id: str, event_name: str) -> bool:
        """True if this delivery id is new; False for a replay."""
        return self._insert_once(WebhookDelivery(delivery_id=delivery_id, event=event_name))

    def _insert_once(self, row) -> bool:
        try:
            with self._session.begin() as s:
                s.add(row)
            return True
        except IntegrityError:
            return False

    # --- deployments & replicas --------------------------------------------
    def add_deployment(
        self, deployment_id: str, component: str, model_name: str, model_version: str, engine: str,
        target: str = "local", flow_run_id: str | None = None,
    ) -> None:
        with self._session.begin() as s:
            s.merge(Deployment(
                id=deployment_id, component=component, model_name=model_name,
                model_version=str(model_version), engine=engine, target=target,
                status=DeploymentStatus.STARTING.value, flow_run_id=flow_run_id,
            ))

    def update_deployment(self, deployment_id: str, **fields) -> None:
        with self._session.begin() as s:
            row = s.get(Deployment, deployment_id)
            if row is None:
                raise KeyError(deployment_id)
            for key, value in fields.items():
                setattr(row, key, value.value if isinstance(value, DeploymentStatus) else value)

    def add_replica(self, replica_id: str, deployment_id: str, url: str, pid: int | None,
                    status: DeploymentStatus = DeploymentStatus.STARTING) -> None:
        with self._session.begin() as s:
            s.merge(Replica(id=replica_id, deployment_id=deployment_id, url=url, pid=pid, status=status.value))

    def set_replica_status(self, replica_id: str, status: DeploymentStatus, pid: int | None = None) -> None:
        with self._session.begin() as s:
            row = s.get(Replica, replica_id)
            if row is None:
                raise KeyError(replica_id)
            row.status = status.value
            if pid is not None:
                row.pid = pid

    def set_route(self, component: str, deployment_id: str) -> str | None:
        """Point a component at a deployment; returns the deployment it replaced."""
        with self._session.begin() as s:
            row = s.get(Route, component)
            previous = row.deployment_id if row else None
            if row is None:
                s.add(Route(component=component, deployment_id=deployment_id))
            else:
                row.deployment_id = deployment_id
            return previous if previous != deployment_id else None

    # --- reads ---------------------------------------------------------------
    def routes(self) -> dict[str, RouteView]:
        """Routed components with their ready replicas (the gateway's only read)."""
        with self._session() as s:
            rows = s.execute(select(Route, Deployment).join(Deployment, Route.deployment_id == Deployment.id)).all()
            replicas = _replicas_by_deployment(s, [d.id for _, d in rows], ready_only=True)
            return {
                route.component: RouteView(
                    component=route.component, deployment_id=dep.id, model_name=dep.model_name,
                    model_version=dep.model_version, engine=dep.engine,
                    replicas=tuple(replicas.get(dep.id, ())),
                )
                for route, dep in rows
            }

    def deployments(self, component: str | None = None) -> list[DeploymentView]:
        with self._session() as s:
            query = select(Deployment).order_by(Deployment.created_at)
            if component:
                query = query.filter_by(component=component)
            deps = list(s.scalars(query))
            routed = {r.deployment_id for r in s.scalars(select(Route))}
            replicas = _replicas_by_deployment(s, [d.id for d in deps], ready_only=False)
            return [_view(d, d.id in routed, replicas.get(d.id, ())) for d in deps]

    def deployment(self, deployment_id: str) -> DeploymentView | None:
        return next((d for d in self.deployments() if d.id == deployment_id), None)

    def routed_deployment(self, component: str) -> DeploymentView | None:
        return next((d for d in self.deployments(component) if d.routed), None)


def _replicas_by_deployment(s: Session, deployment_ids: list[str], ready_only: bool) -> dict[str, list[ReplicaView]]:
    if not deployment_ids:
        return {}
    query = select(Replica).where(Replica.deployment_id.in_(deployment_ids)).order_by(Replica.id)
    if ready_only:
        query = query.where(Replica.status == DeploymentStatus.READY.value)
    grouped: dict[str, list[ReplicaView]] = {}
    for r in s.scalars(query):
        grouped.setdefault(r.deployment_id, []).append(ReplicaView(id=r.id, url=r.url, pid=r.pid))
    return grouped


def _view(d: Deployment, routed: bool, replicas) -> DeploymentView:
    return DeploymentView(
        id=d.id, component=d.component, model_name=d.model_name, model_version=d.model_version,
        engine=d.engine, bento_tag=d.bento_tag, status=d.status, load_time_s=d.load_time_s,
        error=d.error, routed=routed, replicas=tuple(replicas),
    )


def _sqlite_wal(dbapi_connection, _record) -> None:
    """WAL lets the gateway read while a flow writes."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
