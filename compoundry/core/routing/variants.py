"""Which variant of a component serves a request, and which route that is (A/B and shadow routing).

With an enabled experiment for a component (``configs/experiments.yaml``),
every request is assigned a variant by the sticky hash of :mod:`split` (its
session or user key, else its request id). The variant then maps to a route:

- a variant that *is* what the component serves (its ``alias`` equals the
  component's serving alias, or its ``version`` is the routed version) is
  served by the component's route;
- any other variant needs its own **variant route** (a deployment made for it
  by ``compoundry deploy MODEL VERSION --variant NAME`` or by moving the
  variant's alias in MLflow). Until that route has a ready replica, its
  requests go to the serving route and are labelled with the serving
  variant: an experiment never fails a request, and never counts a sample for
  a variant that did not answer it.

Shadowing: the plan may also name a variant that receives a mirrored copy;
that happens only when it has a ready route of its own.

Pure apart from reading the config through a callable; plans are rebuilt only
when a config reload replaces the experiments mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from compoundry.core.routing.route_view import RouteView
from compoundry.core.routing.split import SplitPlan, routing_key


@dataclass(frozen=True)
class Assignment:
    """The experiment's decision for one request (``variant`` None: the component has no experiment)."""

    experiment: str | None = None
    variant: str | None = None
    shadow: str | None = None
    sticky: bool = False
    unit_key: str | None = None  # the sticky key (``s:<session>``, ``u:<user>``): the unit of the analysis


NO_EXPERIMENT = Assignment()


@dataclass(frozen=True)
class _Entry:
    name: str
    experiment: object  # compoundry.config.models.Experiment
    plan: SplitPlan


class VariantRouter:
    """Assign requests to variants and resolve variants to routes, per component."""

    def __init__(self, experiments: Callable[[], Mapping[str, object]]):
        self._experiments = experiments
        self._source: object = None
        self._by_component: dict[str, _Entry] = {}

    def _entries(self) -> dict[str, _Entry]:
        current = self._experiments()
        if current is not self._source:  # a config reload swapped the mapping: rebuild the plans once
            self._by_component = {exp.component: _Entry(name, exp, SplitPlan.from_experiment(name, exp))
                                  for name, exp in current.items() if exp.enabled}
            self._source = current
        return self._by_component

    def assign(self, component: str, *, session: str | None, user: str | None, request_id: str) -> Assignment:
        """The variant (and shadow) for this request, or :data:`NO_EXPERIMENT`."""
        entry = self._entries().get(component)
        if entry is None:
            return NO_EXPERIMENT
        key, sticky = routing_key(entry.plan.sticky_key, session=session, user=user, request_id=request_id)
        route = entry.plan.route(key)
        return Assignment(entry.name, route.variant, route.shadow, sticky, key if sticky else None)

    def resolve(self, component: str, serving: RouteView | None, serving_alias: str,
                variant: str | None) -> tuple[RouteView | None, str | None]:
        """``(route, variant label)`` for an assigned variant: its own ready route, else the serving route.

        The label is what metering and metrics record: the variant that really answered.
        """
        entry = self._entries().get(component)
        if variant is None or entry is None or serving is None:
            return serving, variant
        if _served_by(entry.experiment, variant, serving, serving_alias):
            return serving, variant
        own = serving.variant_route(variant)
        if own is not None and own.replicas:
            return own, variant
        return serving, self.serving_label(component, serving, serving_alias)

    def shadow_route(self, component: str, serving: RouteView | None, serving_alias: str,
                     shadow: str | None) -> RouteView | None:
        """The ready route a mirrored copy goes to, or None (no shadow, or nothing ready to take it)."""
        entry = self._entries().get(component)
        if shadow is None or entry is None or serving is None:
            return None
        if _served_by(entry.experiment, shadow, serving, serving_alias):
            return None  # mirroring to the variant that already answers would only double the load
        own = serving.variant_route(shadow)
        return own if own is not None and own.replicas else None

    def serving_label(self, component: str, serving: RouteView | None, serving_alias: str) -> str | None:
        """The experiment's name for what the serving route runs (None without an experiment)."""
        entry = self._entries().get(component)
        if entry is None or serving is None:
            return None
        return next((v.name for v in entry.experiment.variants
                     if _served_by(entry.experiment, v.name, serving, serving_alias)), serving_alias)


def _served_by(experiment, variant: str, serving: RouteView, serving_alias: str) -> bool:
    """Whether the component's serving route already runs ``variant``."""
    spec = next((v for v in experiment.variants if v.name == variant), None)
    if spec is None:
        return False
    if spec.alias is not None:
        return spec.alias == serving_alias
    return spec.version == serving.model_version


class ActiveExperiments:
    """The experiments the gateway splits: enabled in ``experiments.yaml`` and whose latest run has not ended.

    Flows end a run (promotion, rollback, conclusion) in the database; the gateway's refresher passes the ended
    names here. The mapping keeps its identity until the config or the ended set changes, so
    :class:`VariantRouter` rebuilds its plans only then.
    """

    def __init__(self, configured: Callable[[], Mapping[str, object]]):
        self._configured = configured
        self.ended: frozenset[str] = frozenset()
        self._source: object = None
        self._seen_ended: frozenset[str] | None = None
        self._active: Mapping[str, object] = {}

    def set_ended(self, ended: frozenset[str]) -> None:
        if ended != self.ended:
            self.ended = frozenset(ended)

    def __call__(self) -> Mapping[str, object]:
        configured = self._configured()
        if configured is not self._source or self.ended is not self._seen_ended:
            self._active = {name: exp for name, exp in configured.items() if name not in self.ended}
            self._source, self._seen_ended = configured, self.ended
        return self._active
