"""Names and labels of the kubernetes target's objects: DNS labels derived from deployment ids, the
recommended ``app.kubernetes.io/*`` labels, and the selector that picks one deployment's pods."""

from __future__ import annotations

import hashlib
import re

from compoundry.scaling.targets.protocol import ScalingSpec

NAME_MAX = 57  # a DNS label is 63; Knative names revisions "<service>-00001", which must stay one
DEPLOYMENT_ID_ANNOTATION = "compoundry.io/deployment-id"
_MANAGED_BY = {"app.kubernetes.io/managed-by": "compoundry", "app.kubernetes.io/part-of": "compoundry"}


def resource_name(deployment_id: str) -> str:
    """A DNS-1035 label for ``deployment_id`` (Services need one): lowercase, ``[a-z0-9-]``, starts with a
    letter, at most :data:`NAME_MAX`. A hash of the raw id is appended whenever anything was changed, so two
    ids that sanitize alike (``a.b``, ``a_b``) never share objects."""
    name = re.sub(r"[^a-z0-9]+", "-", deployment_id.lower()).strip("-")
    if not name[:1].isalpha():
        name = f"d-{name}".rstrip("-")
    if name == deployment_id and len(name) <= NAME_MAX:
        return name
    digest = hashlib.sha256(deployment_id.encode()).hexdigest()[:8]
    return f"{name[:NAME_MAX - 9].rstrip('-')}-{digest}"


def label_value(value: str) -> str:
    """``value`` as a valid label value (<= 63 of ``[A-Za-z0-9._-]``, alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", value)[:63].strip("._-")


def labels(spec: ScalingSpec) -> dict[str, str]:
    """Recommended ``app.kubernetes.io/*`` labels plus what compoundry selects on."""
    out = {
        "app.kubernetes.io/name": label_value(spec.component),
        "app.kubernetes.io/instance": resource_name(spec.deployment_id),
        "app.kubernetes.io/version": label_value(spec.model_version),
        "app.kubernetes.io/component": "model-server",
        **_MANAGED_BY,
        "compoundry.io/component": label_value(spec.component),
        "compoundry.io/engine": label_value(spec.engine),
    }
    if spec.variant:
        out["compoundry.io/variant"] = label_value(spec.variant)
    return out


def selector(deployment_id: str) -> dict[str, str]:
    """The labels that pick one deployment's pods (stable across versions: a Deployment's selector is immutable)."""
    return {"app.kubernetes.io/instance": resource_name(deployment_id), **_MANAGED_BY}
