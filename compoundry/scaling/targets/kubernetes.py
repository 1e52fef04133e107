"""The ``kubernetes`` scaler target, in one import: names (``kubernetes_names``), pure renderers
(``kubernetes_render``), the server-side-apply adapter (``kubernetes_apply``) and runner images
(``kubernetes_images``). See docs/targets.md and docs/decisions/0015 and 0038."""

from __future__ import annotations

from compoundry.scaling.targets.kubernetes_apply import (
    FIELD_MANAGER,
    KubernetesApplyError,
    KubernetesTarget,
    RolloutStatus,
    deployment_rollout,
    knative_rollout,
)
from compoundry.scaling.targets.kubernetes_names import (
    DEPLOYMENT_ID_ANNOTATION,
    NAME_MAX,
    label_value,
    labels,
    resource_name,
    selector,
)
from compoundry.scaling.targets.kubernetes_render import (
    CPU_FALLBACK_UTILIZATION,
    DEFAULT_RESOURCES,
    IN_FLIGHT_METRIC,
    KNATIVE,
    KPA,
    PORT,
    bento_env,
    gpu_count,
    knative_windows,
    render_manifests,
    replica_floor,
    service_url,
)

__all__ = [
    "CPU_FALLBACK_UTILIZATION", "DEFAULT_RESOURCES", "DEPLOYMENT_ID_ANNOTATION", "FIELD_MANAGER", "IN_FLIGHT_METRIC",
    "KNATIVE", "KPA", "NAME_MAX", "PORT", "KubernetesApplyError", "KubernetesTarget", "RolloutStatus", "bento_env",
    "deployment_rollout", "gpu_count", "knative_rollout", "knative_windows", "label_value", "labels",
    "render_manifests", "replica_floor", "resource_name", "selector", "service_url",
]
