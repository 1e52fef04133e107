"""The platform database (SQLAlchemy; SQLite embedded, PostgreSQL in production) and in-memory copies of it.

``PlatformStore`` is the write path for deployments, replicas, routes and claims,
and hands out sessions to the focused stores beside it (capacity floors, API keys,
experiment runs, observations); ``refresh`` keeps the gateway's copies current.
"""

from compoundry.store.platform_store import DeploymentView, PlatformStore
from compoundry.store.tables import DeploymentStatus

__all__ = ["DeploymentStatus", "DeploymentView", "PlatformStore"]
