"""Fakes shared by unit tests: each stands in for one adapter's interface, records what it was asked, and
answers from memory. A test module imports from here, never from another test module."""

from __future__ import annotations

import asyncio

from compoundry.config.models import Pipeline
from compoundry.gateway.errors import ComponentFailed
from compoundry.gateway.executor import ComponentReply


# --- scaling: the target and the capacity store, as the autoscaler uses them ----------------------
class RecordingTarget:
    """A ScalerTarget that converges at once and records every ``set_replicas``."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []
        self.live: dict[str, int] = {}

    def replicas(self, deployment_id: str) -> int:
        return self.live.get(deployment_id, 0)

    def set_replicas(self, spec, replicas: int) -> int:
        self.calls.append((spec.deployment_id, replicas))
        self.live[spec.deployment_id] = replicas
        return replicas


class NoCapacity:
    """A CapacityStore with no warm-up floors, where every deployment has a Bento."""

    def active_floors(self):
        return {}

    def bento_tags(self, ids):
        return {d: "tag" for d in ids}


# --- the pipeline executor: components as coroutines -------------------------------------------
def pipeline(steps: dict, output=None, sla_ms: int = 10_000) -> Pipeline:
    return Pipeline(steps=steps, output=output, sla_ms=sla_ms)


def fake_components(delays_ms: dict[str, float], fail: set[str] = frozenset(), calls: list | None = None):
    """A ``call`` that sleeps per component, echoes its inputs, and fails for components in ``fail``."""

    async def call(component, inputs, timeout):
        if calls is not None:
            calls.append((component, inputs, timeout))
        await asyncio.sleep(delays_ms.get(component, 0) / 1000)
        if component in fail:
            raise ComponentFailed(f"{component} exploded")
        return ComponentReply({"component": component, "echo": inputs}, deployment=f"{component}-dep", model_version="1")

    return call
