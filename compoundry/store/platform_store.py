"""`PlatformStore`: the one write path for platform state, and the route read.

Every method opens a short transaction; callers never hold sessions. The
gateway calls only :meth:`routes` and only from a background refresher, so the
request path never waits on the database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import create_engine, event, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.schema import CreateColumn

from compoundry.core.deploy_decisions import DeployIntent, RouteIntent, trigger_of
from compoundry.core.routing.route_view import ReplicaView, RouteView
from compoundry.store.tables import (
    Base,
    DeployClaim,
    Deployment,
    DeploymentStatus,
    Replica,
    Route,
    VariantRoute,
    WebhookDelivery,
    utcnow,
)

_TERMINAL = (DeploymentStatus.STOPPED, DeploymentStatus.FAILED)


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
    routed: bool  # serving traffic: the component's route or an experiment variant's
    replicas: tuple[ReplicaView, ...]
    variant: str | None = None  # the experiment variant it serves, when variant-routed


class PlatformStore:
    def __init__(self, database_url: str):
        connect_args = {"timeout": 30} if database_url.startswith("sqlite") else {}
        self.engine = create_engine(database_url, connect_args=connect_args, pool_pre_ping=True)
        if database_url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_wal)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        Base.metadata.create_all(self.engine)
        _add_missing_columns(self.engine)
        _private_sqlite_file(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        """A short read session: ``with store.session() as s: ...`` (the focused stores beside this one use it)."""
        return self._session()

    def transaction(self):
        """A session in a transaction, committed when the ``with`` block ends without an error."""
        return self._session.begin()

    # --- deploy claims & webhook deliveries --------------------------------
    def claim_deploy(self, model_name: str, version: str, reason: str, source: str,
                     component: str | None = None) -> int | None:
        """The claim's intent (a sequence number, truthy) for the first caller only; ``None`` for the others:
        a version is deployed once per reason."""
        claim = DeployClaim(model_name=model_name, model_version=str(version), reason=reason, source=source,
                            component=component)
        return claim.id if self._insert_once(claim) else None

    def pending_intents(self, component: str, after: int) -> list[DeployIntent]:
        """Claims of ``component`` newer than intent ``after`` (those superseded are deleted): commands on
        their way, or done (a done one routed the component, so its route intent says the same)."""
        with self._session() as s:
            rows = s.scalars(select(DeployClaim).where(DeployClaim.component == component, DeployClaim.id > after)
                             .order_by(DeployClaim.id))
            return [DeployIntent(r.model_version, r.id, trigger_of(r.reason)) for r in rows]

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

    def release_intent(self, intent: int) -> None:
        """Forget a claim whose deploy was superseded: the same command, given again later, deploys again."""
        with self._session.begin() as s:
            claim = s.get(DeployClaim, intent)
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
            if status in _TERMINAL:
                row.stopped_at = row.stopped_at or utcnow()  # the first stop ends its billed lifetime
            else:
                row.stopped_at = None

    def set_route(self, component: str, deployment_id: str, intent: int = 0, trigger: str = "manual",
                  expect_intent: int | None = None) -> str | None:
        """Point a component at a deployment (set by deploy ``intent``); returns the deployment it replaced.

        With ``expect_intent``, only if the route is still the one set by that intent (a compare-and-set: a
        deploy that lost its lease cannot overwrite a newer switch); else :class:`RouteMoved`.
        """
        with self._session.begin() as s:
            row = s.get(Route, component, with_for_update=expect_intent is not None)
            _expect(row, expect_intent, component)
            previous = row.deployment_id if row else None
            if row is None:
                s.add(Route(component=component, deployment_id=deployment_id, intent=intent, trigger=trigger))
            else:
                row.deployment_id, row.intent, row.trigger = deployment_id, intent, trigger
            return previous if previous != deployment_id else None

    def set_variant_route(self, component: str, variant: str, deployment_id: str, intent: int = 0,
                          trigger: str = "manual", expect_intent: int | None = None) -> str | None:
        """Point one experiment variant of a component at a deployment; returns the one it replaced."""
        with self._session.begin() as s:
            row = s.get(VariantRoute, (component, variant), with_for_update=expect_intent is not None)
            _expect(row, expect_intent, f"{component} ({variant})")
            previous = row.deployment_id if row else None
            if row is None:
                s.add(VariantRoute(component=component, variant=variant, deployment_id=deployment_id,
                                   intent=intent, trigger=trigger))
            else:
                row.deployment_id, row.intent, row.trigger = deployment_id, intent, trigger
            return previous if previous != deployment_id else None

    def route_intent(self, component: str, variant: str | None = None) -> RouteIntent:
        """The version a route serves and the deploy intent that set it (what a newer deploy must beat)."""
        with self._session() as s:
            row = s.get(Route, component) if variant is None else s.get(VariantRoute, (component, variant))
            if row is None:
                return RouteIntent(None, 0)
            deployment = s.get(Deployment, row.deployment_id)
            return RouteIntent(deployment.model_version if deployment else None, row.intent or 0, row.trigger)

    def clear_variant_route(self, component: str, variant: str) -> str | None:
        """Remove a variant route (its traffic goes back to the serving route); returns its deployment."""
        with self._session.begin() as s:
            row = s.get(VariantRoute, (component, variant))
            if row is None:
                return None
            s.delete(row)
            return row.deployment_id

    # --- reads ---------------------------------------------------------------
    def routes(self) -> dict[str, RouteView]:
        """Routed components with their ready replicas and variant routes (the gateway's only read)."""
        with self._session() as s:
            rows = s.execute(select(Route, Deployment).join(Deployment, Route.deployment_id == Deployment.id)).all()
            variant_rows = s.execute(select(VariantRoute, Deployment)
                                     .join(Deployment, VariantRoute.deployment_id == Deployment.id)).all()
            replicas = _replicas_by_deployment(s, [d.id for _, d in rows + variant_rows], ready_only=True)
            variants: dict[str, list[RouteView]] = {}
            for vr, dep in variant_rows:
                variants.setdefault(vr.component, []).append(_route_view(vr.component, dep, replicas, vr.variant))
            return {route.component: _route_view(route.component, dep, replicas, None,
                                                 tuple(variants.get(route.component, ())))
                    for route, dep in rows}

    def deployments(self, component: str | None = None) -> list[DeploymentView]:
        with self._session() as s:
            query = select(Deployment).order_by(Deployment.created_at)
            if component:
                query = query.filter_by(component=component)
            deps = list(s.scalars(query))
            routed: dict[str, str | None] = {r.deployment_id: None for r in s.scalars(select(Route))}
            routed |= {v.deployment_id: v.variant for v in s.scalars(select(VariantRoute))}
            replicas = _replicas_by_deployment(s, [d.id for d in deps], ready_only=False)
            return [_view(d, d.id in routed, replicas.get(d.id, ()), routed.get(d.id)) for d in deps]

    def replica_urls_in_use(self) -> set[str]:
        """URLs of replicas that hold (or may still hold) their port: starting, ready or draining.

        Stopped and failed replicas of a deployment that keeps running (an autoscaled one churns many) free
        their port; counting them would exhaust the replica port range.
        """
        live = (DeploymentStatus.STARTING.value, DeploymentStatus.READY.value, DeploymentStatus.DRAINING.value)
        with self._session() as s:
            return set(s.scalars(select(Replica.url).where(Replica.status.in_(live))))

    def deployment(self, deployment_id: str) -> DeploymentView | None:
        return next((d for d in self.deployments() if d.id == deployment_id), None)

    def routed_deployment(self, component: str) -> DeploymentView | None:
        """The deployment on the component's serving route (not an experiment variant's)."""
        return next((d for d in self.deployments(component) if d.routed and d.variant is None), None)


class RouteMoved(RuntimeError):
    """The route changed since the deploy last looked: another deploy switched it."""


def _expect(row, intent: int | None, what: str) -> None:
    if intent is not None and (row.intent if row is not None else 0) != intent:
        raise RouteMoved(f"the route of {what} was switched by intent #{getattr(row, 'intent', 0)} meanwhile")


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


def _route_view(component: str, dep: Deployment, replicas: dict[str, list[ReplicaView]], variant: str | None,
                variants: tuple[RouteView, ...] = ()) -> RouteView:
    return RouteView(component=component, deployment_id=dep.id, model_name=dep.model_name,
                     model_version=dep.model_version, engine=dep.engine, replicas=tuple(replicas.get(dep.id, ())),
                     variant=variant, variants=variants)


def _view(d: Deployment, routed: bool, replicas, variant: str | None = None) -> DeploymentView:
    return DeploymentView(
        id=d.id, component=d.component, model_name=d.model_name, model_version=d.model_version,
        engine=d.engine, bento_tag=d.bento_tag, status=d.status, load_time_s=d.load_time_s,
        error=d.error, routed=routed, replicas=tuple(replicas), variant=variant,
    )


def _add_missing_columns(engine) -> None:
    """Additive upgrades only: a column the model has and an older database lacks is added with its
    server default. Anything else (renames, type changes) would need a real migration tool (Alembic)."""
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable and column.server_default is None:
                raise RuntimeError(f"the platform database lacks {table.name}.{column.name}, which has no default to "
                                   "add it with; migrate the database or start from a fresh state dir")
            ddl = CreateColumn(column).compile(dialect=engine.dialect)
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))


def _private_sqlite_file(engine) -> None:
    """An embedded database file is the platform's state (keys' hashes, routes, metering): owner-only, 0600.
    SQLite gives its -wal and -shm files the database file's permissions."""
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if database and database != ":memory:" and os.path.exists(database):
        os.chmod(database, 0o600)


def _sqlite_wal(dbapi_connection, _record) -> None:
    """WAL lets the gateway read while a flow writes."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
