"""Which deployments an experiment needs, and what promotion deploys (pure: versions come from a callable).

Claim reasons match :mod:`compoundry.core.deploy_decisions`'s, so a webhook or poll
that sees the same alias move finds the deploy already claimed and does not
deploy it a second time.
"""

from __future__ import annotations

from collections.abc import Callable

from compoundry.core.deploy_decisions import DeployRequest


def variant_version(variant, model: str, resolve_alias: Callable[[str, str], str]) -> str:
    """The model version a variant stands for now (an alias is looked up; a version is itself)."""
    return variant.version if variant.version is not None else resolve_alias(model, variant.alias)


def variant_deploys(experiment, component, serving, resolve_alias: Callable[[str, str], str],
                    source: str = "experiment") -> list[DeployRequest]:
    """Deploy requests for every variant that neither the serving route nor its own route runs yet.

    ``component`` is the experiment's component config, ``serving`` its serving ``RouteView``.
    """
    requests = []
    for variant in experiment.variants:
        version = variant_version(variant, component.model, resolve_alias)
        if variant.alias == component.alias or version == serving.model_version:
            continue  # the serving route is this variant
        own = serving.variant_route(variant.name)
        current = own.model_version if own else None
        if current == version:
            continue
        how = f"alias:{variant.alias}" if variant.alias is not None else "version"
        requests.append(DeployRequest(experiment.component, component.model, version,
                                      f"variant:{variant.name}:{how}:from:{current}", source, variant.name))
    return requests


def promotion_deploy(experiment, component, serving, winner: str,
                     resolve_alias: Callable[[str, str], str]) -> tuple[str, DeployRequest | None]:
    """``(version, request)``: the winner's version and the serving-route deploy it needs (None: already served)."""
    version = variant_version(experiment.variant(winner), component.model, resolve_alias)
    if serving is not None and serving.model_version == version:
        return version, None
    current = serving.model_version if serving else None
    return version, DeployRequest(experiment.component, component.model, version,
                                  f"promotion:{component.alias}:from:{current}", "promotion")
