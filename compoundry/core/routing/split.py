"""A/B and shadow assignment of requests to an experiment's variants: pure, stable hashing.

The same key must land on the same variant in every gateway worker, on every
host and after every restart, so assignment hashes with BLAKE2b (Python's
``hash()`` is salted per process) into one of :data:`BUCKETS` buckets:

    bucket = blake2b(experiment_name + ":" + key, person=<purpose>) mod 10_000

Variants own consecutive bucket ranges in their config order (weights are whole
percentages, 100 buckets each). Changing weights moves only the buckets whose
range boundary shifted: moving ``d`` points between two neighbouring variants
re-assigns exactly ``d`` % of keys, and only between those two.

Shadowing hashes the same key with a different BLAKE2b personalisation, so the
mirror decision is independent of the A/B bucket (a 10 % shadow samples 10 % of
every variant's traffic, not one end of one range).

Usage by the gateway (build a plan when config changes, route per request)::

    plans = plans_by_component(config.experiments)          # on (re)load
    plan = plans.get(component)
    if plan is not None:
        key, sticky = routing_key(plan.sticky_key, session=..., user=..., request_id=...)
        route = plan.route(key)     # route.variant serves; route.shadow (or None) gets a mirrored copy
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Hash space. 10 000 buckets = 100 per weight point, so 0.01 % shadow fractions are expressible.
BUCKETS = 10_000
_SPLIT = b"compoundry-ab"  # BLAKE2b personalisation (<= 16 bytes): one per purpose, independent hashes
_SHADOW = b"compoundry-shdw"


def bucket(experiment: str, key: str, *, purpose: bytes = _SPLIT) -> int:
    """Stable bucket in ``[0, BUCKETS)`` of ``key`` for ``experiment``; the same in every process."""
    digest = hashlib.blake2b(f"{experiment}:{key}".encode(), digest_size=8, person=purpose).digest()
    return int.from_bytes(digest, "big") % BUCKETS  # 64-bit digest: modulo bias ~1e-15, negligible


def thresholds(weights: Sequence[int]) -> tuple[int, ...]:
    """Cumulative exclusive upper bucket bounds; variant ``i`` owns ``[t[i-1], t[i])``."""
    total, out = 0, []
    for w in weights:
        total += w * (BUCKETS // 100)
        out.append(total)
    return tuple(out)


def _check_weights(variants: Sequence[tuple[str, int]]) -> None:
    if not variants:
        raise ValueError("an experiment needs at least one variant")
    names = [n for n, _ in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate variant names in {names}")
    if any(not isinstance(w, int) or isinstance(w, bool) or w < 0 for _, w in variants):
        raise ValueError("variant weights must be non-negative whole percentages")
    if sum(w for _, w in variants) != 100:
        raise ValueError(f"variant weights sum to {sum(w for _, w in variants)}, they must sum to 100")


def shadow_threshold(fraction: float) -> int:
    """Buckets (of :data:`BUCKETS`) that are mirrored for a shadow ``fraction`` in ``[0, 1]``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"shadow fraction {fraction} must be within [0, 1]")
    return round(fraction * BUCKETS)


@dataclass(frozen=True)
class Route:
    """Where one request goes: ``variant`` answers; ``shadow`` (if not None) receives a mirrored copy."""

    variant: str
    shadow: str | None = None


@dataclass(frozen=True)
class SplitPlan:
    """One experiment's split, precomputed from config so routing is one hash and one bisect."""

    experiment: str
    names: tuple[str, ...]
    bounds: tuple[int, ...]  # cumulative thresholds, same order as names
    shadow_variant: str | None = None
    shadow_buckets: int = 0  # requests with shadow bucket < this are mirrored
    sticky_key: str = "session"

    @classmethod
    def build(cls, experiment: str, variants: Sequence[tuple[str, int]], *, shadow_variant: str | None = None,
              shadow_fraction: float = 0.0, sticky_key: str = "session") -> SplitPlan:
        """Validate ``(name, weight)`` pairs (config order matters: it fixes bucket ranges) and precompute."""
        _check_weights(variants)
        names = tuple(n for n, _ in variants)
        if shadow_variant is not None and shadow_variant not in names:
            raise ValueError(f"shadow variant {shadow_variant!r} is not one of {names}")
        return cls(experiment, names, thresholds([w for _, w in variants]), shadow_variant,
                   shadow_threshold(shadow_fraction) if shadow_variant is not None else 0, sticky_key)

    @classmethod
    def from_experiment(cls, name: str, experiment) -> SplitPlan:
        """Plan for a validated ``experiments.yaml`` entry (a ``config.models.Experiment``; ``enabled`` is ignored:
        the caller decides)."""
        shadow = experiment.shadow
        return cls.build(name, [(v.name, v.weight) for v in experiment.variants],
                         shadow_variant=shadow.variant if shadow else None,
                         shadow_fraction=shadow.fraction if shadow else 0.0, sticky_key=experiment.sticky_key)

    def variant_for(self, key: str) -> str:
        """The variant serving ``key`` (zero-weight variants own an empty range and never match)."""
        return self.names[bisect_right(self.bounds, bucket(self.experiment, key))]

    def mirrors(self, key: str) -> bool:
        """Whether ``key`` is in the shadow sample, decided independently of its A/B bucket."""
        return self.shadow_buckets > 0 and bucket(self.experiment, key, purpose=_SHADOW) < self.shadow_buckets

    def route(self, key: str) -> Route:
        """Variant plus optional shadow; never mirrors a request to the variant already serving it."""
        variant = self.variant_for(key)
        if self.shadow_variant is None or self.shadow_variant == variant or not self.mirrors(key):
            return Route(variant)
        return Route(variant, self.shadow_variant)


def assign_variant(experiment: str, variants: Sequence[tuple[str, int]], key: str) -> str:
    """One-off assignment (builds a plan each call; use :class:`SplitPlan` on the hot path)."""
    return SplitPlan.build(experiment, variants).variant_for(key)


def mirror(experiment: str, shadow_fraction: float, key: str) -> bool:
    """One-off shadow decision for ``key`` at ``shadow_fraction``."""
    threshold = shadow_threshold(shadow_fraction)
    return threshold > 0 and bucket(experiment, key, purpose=_SHADOW) < threshold


def routing_key(sticky_key: str, *, session: str | None, user: str | None, request_id: str) -> tuple[str, bool]:
    """``(key, sticky)``: the configured key, else the other client key, else the request id (not sticky).

    Keys are namespaced (``s:``/``u:``/``r:``) so a session id equal to some user id is a different key.
    """
    preferred = {"session": (("s", session), ("u", user)), "user": (("u", user), ("s", session))}
    for prefix, value in preferred.get(sticky_key, ()):
        if value:
            return f"{prefix}:{value}", True
    return f"r:{request_id}", False


def plans_by_component(experiments: Mapping[str, object]) -> dict[str, SplitPlan]:
    """``component -> plan`` for the enabled experiments (the loader allows one enabled per component)."""
    return {exp.component: SplitPlan.from_experiment(name, exp) for name, exp in experiments.items() if exp.enabled}
