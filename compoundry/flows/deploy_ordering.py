"""The deploy flow's ordering steps: is this deploy still wanted, switch the route, move the alias.

They run under the component's deploy lease (``flows/deploy.py``). "Still wanted" is the pure
:func:`compoundry.core.deploy_decisions.superseded_by` over what the route, the claims and MLflow say now;
the switch is a compare-and-set on the route's intent, so even a deploy that lost its lease cannot
overwrite a newer switch; the alias is moved only if nobody moved it since the last check.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from compoundry.core.deploy_decisions import ALIAS, DeployIntent, superseded_by
from compoundry.flows.context import store_for
from compoundry.registry.model_store import ModelNotFound, ModelStore
from compoundry.store import DeploymentStatus
from compoundry.store.platform_store import RouteMoved


@dataclass(frozen=True)
class Ordering:
    """Plain values that place one deploy among the commands for its component."""

    database_url: str
    tracking_uri: str
    component: str
    variant: str | None
    model_name: str
    version: str
    intent: int
    trigger: str              # version | alias | manual
    alias: str | None         # the alias this route follows (None: a variant without one)
    alias_at_start: str | None


@dataclass(frozen=True)
class Check:
    superseded: str | None    # why this deploy must not switch, or None
    route_intent: int         # the route's intent when checked: the switch expects it unchanged
    alias_now: str | None


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=2, task_run_name="read alias {alias}")
def read_alias(tracking_uri: str, model_name: str, alias: str | None) -> str | None:
    """The version ``alias`` points at now (``None``: no such alias, or no alias governs this route)."""
    return _alias(tracking_uri, model_name, alias)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, task_run_name="is v{order.version} still wanted")
def check_intent(order: Ordering) -> Check:
    """Why this deploy is superseded (a newer command, the alias moved on, an older version), or None."""
    store = store_for(order.database_url)
    route = store.route_intent(order.component, order.variant)
    pending = store.pending_intents(order.component, after=order.intent)
    alias_now = _alias(order.tracking_uri, order.model_name, order.alias)
    reason = superseded_by(DeployIntent(order.version, order.intent, order.trigger), route, alias_now,
                           order.alias_at_start, pending)
    return Check(reason, route.intent, alias_now)


@task(cache_policy=NO_CACHE, task_run_name="switch route of {order.component}")
def switch_route(order: Ordering, deployment_id: str, check: Check) -> str | None:
    """Point the serving route (or the variant's) here if nobody switched it since ``check``; returns the
    deployment it replaced. :class:`RouteMoved` otherwise."""
    store = store_for(order.database_url)
    store.update_deployment(deployment_id, status=DeploymentStatus.READY)
    if order.variant:
        return store.set_variant_route(order.component, order.variant, deployment_id, order.intent, order.trigger,
                                       expect_intent=check.route_intent)
    return store.set_route(order.component, deployment_id, order.intent, order.trigger,
                           expect_intent=check.route_intent)


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=2, task_run_name="set alias → v{order.version}")
def move_alias(order: Ordering, check: Check) -> str:
    """Point the serving alias at the routed version, unless it is there already (an alias-triggered deploy)
    or someone moved it since the check (their command wins; its own deploy follows)."""
    if order.trigger == ALIAS or order.alias is None:
        return "already there"
    if _alias(order.tracking_uri, order.model_name, order.alias) != check.alias_now:
        return "left as it is: it was moved after the route switched"
    ModelStore(order.tracking_uri).set_alias(order.model_name, order.alias, order.version)
    return "moved"


def _alias(tracking_uri: str, model_name: str, alias: str | None) -> str | None:
    if alias is None:
        return None
    try:
        return ModelStore(tracking_uri).by_alias(model_name, alias).version
    except ModelNotFound:
        return None


__all__ = ["Check", "Ordering", "RouteMoved", "check_intent", "move_alias", "read_alias", "switch_route"]
