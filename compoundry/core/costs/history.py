"""What the config said, then and now: pure rules that keep cost reports working after the config changes.

A metering row outlives the config it was written under: a component is
removed or renamed, a pipeline retired, while its rows stay in every report
window for weeks. So the report does not require today's config to name
everything it reads (docs/decisions/0031):

* **Pipeline ids** are attributed, never taken as free text: an id that is not
  a pipeline known to the platform (configured now, or in the config history)
  becomes :data:`UNREGISTERED`. The gateway applies the same rule to a
  client's ``X-Pipeline-Id`` before anything is recorded.
* **Config history** entries are plain JSON-able dicts per ``(kind, name)``:
  a component's mode, prices and sizing, a pipeline's step dependencies. The
  store appends an entry when it differs from the latest one of that name
  (:func:`changed`); a name in the history but not in today's config is
  *retired*, and its last entry still prices and decomposes its old rows.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass

from compoundry.core.costs.cost_model import Tariff

UNREGISTERED = "(unregistered)"  # a pipeline id that no configured pipeline ever had
COMPONENT, PIPELINE = "component", "pipeline"

Key = tuple[str, str]  # (kind, name)


def attributed_pipeline(pipeline_id: str | None, known: Container[str]) -> str:
    """``''`` for a direct call (no id), the id of a known pipeline, else :data:`UNREGISTERED`."""
    if not pipeline_id:
        return ""
    return pipeline_id if pipeline_id in known else UNREGISTERED


@dataclass(frozen=True)
class RecordedPrices:
    """A component's prices as the history kept them (the :class:`~compoundry.core.costs.records.PriceList`)."""

    replica_hour: float = 0.0
    per_call: float = 0.0
    per_1k_tokens: float = 0.0


def config_entries(components: Mapping, pipelines: Mapping) -> dict[Key, dict]:
    """Today's config as history entries (``components.yaml`` / ``pipelines.yaml`` models, duck-typed)."""
    entries: dict[Key, dict] = {}
    for name, c in components.items():
        entries[(COMPONENT, name)] = {
            "mode": c.mode, "replica_hour": float(c.prices.replica_hour), "per_call": float(c.prices.per_call),
            "per_1k_tokens": float(c.prices.per_1k_tokens), "min_replicas": int(c.scaling.min_replicas),
            "target_concurrency": float(c.scaling.target_concurrency)}
    for name, p in pipelines.items():
        entries[(PIPELINE, name)] = {"steps": {step: sorted(s.depends_on) for step, s in sorted(p.steps.items())}}
    return entries


def changed(latest: Mapping[Key, dict], current: Mapping[Key, dict]) -> dict[Key, dict]:
    """The entries of ``current`` the history must append: new names and names whose details changed."""
    return {key: details for key, details in current.items() if latest.get(key) != details}


def tariff_of(details: Mapping) -> Tariff:
    """A retired component's tariff from its last history entry."""
    prices = RecordedPrices(float(details.get("replica_hour", 0.0)), float(details.get("per_call", 0.0)),
                            float(details.get("per_1k_tokens", 0.0)))
    return Tariff(str(details.get("mode", "dedicated")), prices, int(details.get("min_replicas", 0)),
                  float(details.get("target_concurrency", 1.0)) or 1.0)


@dataclass(frozen=True)
class Retired:
    """What the history knows of names that today's config no longer has."""

    tariffs: dict[str, Tariff]                # component -> its last known tariff
    pipelines: dict[str, dict[str, list[str]]]  # pipeline -> step -> depends_on, as last configured


def retired(history: Mapping[Key, dict], current: Mapping[Key, dict]) -> Retired:
    """Entries of the history whose names are not in ``current`` (today's :func:`config_entries`)."""
    gone = {key: details for key, details in history.items() if key not in current}
    return Retired(
        tariffs={name: tariff_of(d) for (kind, name), d in gone.items() if kind == COMPONENT},
        pipelines={name: {step: list(deps) for step, deps in d.get("steps", {}).items()}
                   for (kind, name), d in gone.items() if kind == PIPELINE})
