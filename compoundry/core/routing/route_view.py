"""What the request path knows about a component's deployment: its ready replicas, plain data.

The store builds these from the database (``PlatformStore.routes``); the
gateway's route table holds the last set it read, and every routing policy
works on them without touching the database.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    variant: str | None = None  # the experiment variant this route serves; None: the component's serving route
    variants: tuple["RouteView", ...] = ()  # on the serving route: the component's variant routes

    def variant_route(self, name: str) -> "RouteView | None":
        return next((v for v in self.variants if v.variant == name), None)
