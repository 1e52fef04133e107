"""Which registry changes lead to a deploy: pure decisions over plain data.

Both paths that observe MLflow (the webhook receiver and the `registry-poll`
flow) turn what they saw into `DeployRequest`s here, then claim each request's
key in the platform database: whichever path claims first deploys, the other
does nothing. That is how "a version is deployed once" holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

#: Tags the platform reads on a model version ("deployment metadata").
TAG_COMPONENT = "compoundry.component"  # which component this version is for (default: by model name)
TAG_DEPLOY = "compoundry.deploy"  # "false" registers without deploying


@dataclass(frozen=True)
class WatchedComponent:
    """A component as the registry watchers (webhook, poll) see it: the model and aliases it follows."""

    name: str
    model: str
    alias: str
    variant_aliases: tuple[tuple[str, str], ...] = ()  # (variant, alias) of its enabled experiment's own variants


def watched_components(config) -> list[WatchedComponent]:
    """Every component, with the aliases its enabled experiment routes to variants."""
    variant_aliases: dict[str, list[tuple[str, str]]] = {}
    for experiment in config.experiments.values():
        if experiment.enabled:
            serving = config.components[experiment.component].alias
            variant_aliases.setdefault(experiment.component, []).extend(
                (v.name, v.alias) for v in experiment.variants if v.alias is not None and v.alias != serving)
    return [WatchedComponent(name, c.model, c.alias, tuple(variant_aliases.get(name, ())))
            for name, c in config.components.items()]


def variant_versions(routes: Mapping) -> dict[tuple[str, str], str]:
    """``(component, variant) -> model version`` of the variant routes in a route table."""
    return {(name, v.variant): v.model_version for name, route in routes.items() for v in route.variants}


@dataclass(frozen=True)
class DeployRequest:
    component: str
    model_name: str
    version: str
    reason: str        # the claim key besides (model, version): "version", "alias:<alias>:from:<v>", "variant:..."
    source: str        # webhook | poll | cli
    variant: str | None = None  # deploy as this experiment variant's route, not the component's serving route

    @property
    def parameters(self) -> dict[str, str]:
        params = {"model_name": self.model_name, "version": self.version, "component": self.component,
                  "source": self.source, "trigger": trigger_of(self.reason)}
        return params | ({"variant": self.variant} if self.variant else {})


def components_for(model_name: str, tags: Mapping[str, str], components: list[WatchedComponent]) -> list[WatchedComponent]:
    """Components served by this model: the version's component tag wins over the model name."""
    tagged = tags.get(TAG_COMPONENT)
    if tagged:
        return [c for c in components if c.name == tagged and c.model == model_name]
    return [c for c in components if c.model == model_name]


def on_version_created(model_name: str, version: str, tags: Mapping[str, str],
                       components: list[WatchedComponent], source: str) -> list[DeployRequest]:
    """A new version is deployed (and becomes the component's alias) unless tagged not to."""
    if str(tags.get(TAG_DEPLOY, "true")).lower() == "false":
        return []
    return [DeployRequest(c.name, model_name, str(version), "version", source)
            for c in components_for(model_name, tags, components)]


def on_alias_set(model_name: str, alias: str, version: str, components: list[WatchedComponent],
                 routed_versions: Mapping[str, str], source: str,
                 variant_routed: Mapping[tuple[str, str], str] | None = None) -> list[DeployRequest]:
    """Moving a component's serving alias to a version it does not serve redeploys it; moving an alias
    that an enabled experiment's variant follows (``challenger``) deploys that version as the variant's route.

    The deploy flow itself sets the alias after switching the route, so its
    own alias event finds the version already routed and is ignored.
    """
    requests = []
    for c in components:
        if c.model != model_name:
            continue
        if c.alias == alias:
            current = routed_versions.get(c.name)
            if current != str(version):
                requests.append(DeployRequest(c.name, model_name, str(version), f"alias:{alias}:from:{current}",
                                              source))
        for variant, variant_alias in c.variant_aliases:
            current = (variant_routed or {}).get((c.name, variant))
            if variant_alias == alias and current != str(version):
                requests.append(DeployRequest(c.name, model_name, str(version),
                                              f"variant:{variant}:alias:{alias}:from:{current}", source, variant))
    return requests


def on_poll(model_name: str, latest_version: str | None, latest_tags: Mapping[str, str],
            alias_version: str | None, alias: str, components: list[WatchedComponent],
            routed_versions: Mapping[str, str],
            variant_routed: Mapping[tuple[str, str], str] | None = None) -> list[DeployRequest]:
    """What the poller would have heard by webhook: the newest version, and the alias position."""
    requests: list[DeployRequest] = []
    if latest_version is not None:
        newer = [c for c in components_for(model_name, latest_tags, components)
                 if _newer(latest_version, routed_versions.get(c.name))]
        requests += [r for r in on_version_created(model_name, latest_version, latest_tags, newer, "poll")]
    if alias_version is not None:
        requests += on_alias_set(model_name, alias, alias_version, components, routed_versions, "poll",
                                 variant_routed)
    return _unique(requests)


def _newer(version: str, routed: str | None) -> bool:
    return routed is None or _number(version) > _number(routed)


def _number(version: str) -> int:
    return int(version) if str(version).isdigit() else -1


def _unique(requests: list[DeployRequest]) -> list[DeployRequest]:
    seen, out = set(), []
    for r in requests:
        key = (r.component, r.model_name, r.version, r.variant)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


# --- intent ordering: which deploy may switch a route ----------------------------------------------
#: What started a deploy, from its claim reason: a registration, an alias move, or an operator's command.
VERSION, ALIAS, MANUAL = "version", "alias", "manual"


def trigger_of(reason: str) -> str:
    """``version`` for a new registration, ``alias`` for an alias move (serving or variant), else ``manual``."""
    if reason == "version":
        return VERSION
    if reason.startswith("alias:") or ":alias:" in reason:
        return ALIAS
    return MANUAL


@dataclass(frozen=True)
class RouteIntent:
    """What a route serves now and the intent (claim sequence) of the deploy that set it (0: before intents)."""

    version: str | None
    intent: int
    trigger: str = MANUAL  # what asked for the deploy that set it


@dataclass(frozen=True)
class DeployIntent:
    version: str
    sequence: int
    trigger: str  # VERSION | ALIAS | MANUAL


def superseded_by(ours: DeployIntent, route: RouteIntent, alias_now: str | None, alias_at_start: str | None,
                  pending: Sequence[DeployIntent] = ()) -> str | None:
    """``None`` when this deploy may switch the route (and move the alias); otherwise why it must not.

    Checked under the component's deploy lease, before starting replicas and again just before the
    switch, so the last command wins:

    - a route set by a newer intent is never replaced (between two registrations the version number
      decides, not the order their webhooks arrived in);
    - a newer operator command still waiting (``pending``: claims after ours, not yet finished) wins, and so
      does a newer version's registration over an older one's;
    - a deploy started by an alias move commits only while the alias still points at its version;
    - any other deploy never moves an alias someone else moved since it started (a deploy flow moves the
      route and the alias together, so an alias that equals the route was moved by a flow, not a person);
    - a registration never replaces a newer version: only an alias (or an operator's deploy) goes back;
    - a version the route already serves is not deployed again (a webhook and the poller both saw it),
      unless an operator asked for it by hand.
    """
    if route.intent > ours.sequence and not (ours.trigger == VERSION == route.trigger):
        return f"a newer intent (#{route.intent}) already routed v{route.version}"
    for later in (p for p in pending if p.sequence > ours.sequence):
        if later.trigger != VERSION:
            return f"a newer command (#{later.sequence}, v{later.version}) is waiting to deploy"
        if ours.trigger == VERSION and _newer(later.version, ours.version):
            return f"v{later.version}, a newer version, is waiting to deploy"
    if route.version == ours.version and ours.trigger != MANUAL:
        return f"v{ours.version} is already routed"
    if ours.trigger == ALIAS:
        if alias_now != ours.version:
            return f"the alias moved on to v{alias_now} after this deploy was asked for"
        return None
    if alias_now not in (alias_at_start, route.version, ours.version):
        return f"the alias was moved to v{alias_now} after this deploy started"
    if ours.trigger == VERSION and route.version is not None and _newer(route.version, ours.version):
        return f"v{route.version} is newer; an older version replaces it only when an alias says so"
    return None
