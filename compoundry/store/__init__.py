"""The platform database: deployments, replicas, routes, deploy claims."""

from compoundry.store.store import PlatformStore, ReplicaView, RouteView
from compoundry.store.tables import DeploymentStatus

__all__ = ["PlatformStore", "ReplicaView", "RouteView", "DeploymentStatus"]
