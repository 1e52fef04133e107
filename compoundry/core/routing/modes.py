"""Which backend serves a call, by the component's mode: a pure decision.

- ``dedicated``: the component's own replicas (held through a cold start).
- ``serverless``: the external endpoint when one is configured, else the
  component's own (scale-to-zero) replicas.
- ``auto``: own replicas while they are up, under their concurrency threshold
  (``scaling.target_concurrency`` per replica) and their breaker is not open;
  otherwise spill over to the external endpoint. Without one, like dedicated.
"""

from __future__ import annotations

from dataclasses import dataclass

REPLICAS, EXTERNAL = "replicas", "external"


@dataclass(frozen=True)
class DedicatedState:
    ready_replicas: int
    in_flight: int
    threshold_per_replica: int
    breaker_open: bool


def choose_backend(mode: str, has_external: bool, dedicated: DedicatedState) -> str:
    """``replicas`` or ``external`` for one call."""
    if not has_external:
        return REPLICAS
    if mode == "serverless":
        return EXTERNAL
    if mode == "auto" and spill_over(dedicated):
        return EXTERNAL
    return REPLICAS


def spill_over(state: DedicatedState) -> bool:
    """Dedicated capacity is down, failing, or at its concurrency threshold."""
    if state.ready_replicas == 0 or state.breaker_open:
        return True
    return state.in_flight >= state.ready_replicas * state.threshold_per_replica
