"""The embedded platform: supervise MLflow, Prefect, the flow server and the gateway as local processes."""

from compoundry.platform.services import ServiceSpec, platform_services
from compoundry.platform.supervisor import PlatformError, ServiceStatus, Supervisor

__all__ = ["PlatformError", "ServiceSpec", "ServiceStatus", "Supervisor", "platform_services"]
