"""The ``kubernetes:`` section of ``configs/platform.yaml``: where model pods run and what they read.

Secrets never appear here or in a rendered manifest: the MLflow URI and the
artifact store's credentials are *named* (a ConfigMap or Secret and a key), and
pods read them at start. Images are pinned tags, never ``latest``
(docs/decisions/0038-kubernetes-manifests.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, model_validator

from compoundry.config.base import Strict


class ValueRef(Strict):
    """One key of a ConfigMap or Secret, read into an environment variable when the pod starts."""

    kind: Literal["ConfigMap", "Secret"] = "ConfigMap"
    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class EnvSource(Strict):
    """A whole ConfigMap or Secret, every key an environment variable (``envFrom``)."""

    kind: Literal["ConfigMap", "Secret"] = "Secret"
    name: str = Field(min_length=1)


class Toleration(Strict):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class NodePool(Strict):
    """Where GPU runners are scheduled: the pool's node labels and the taints its pods must tolerate."""

    node_selector: dict[str, str] = Field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")])


class ComponentResources(Strict):
    """Per-component overrides of a runner's resources and placement (null: the platform default)."""

    gpu: NonNegativeInt | None = Field(None, description="nvidia.com/gpu per replica; > 0 puts the runner on "
                                                         "the GPU node pool (an llm runner then uses vLLM)")
    cpu: str | None = Field(None, description="CPU request, e.g. '2' or '500m'")
    memory: str | None = Field(None, description="memory request and limit, e.g. '16Gi'")
    node_selector: dict[str, str] | None = Field(None, description="replaces the GPU pool's node selector")
    tolerations: list[Toleration] | None = Field(None, description="replaces the GPU pool's tolerations")


class ImageSettings(Strict):
    """Where runner images come from: a registry and a pinned tag, else ``bentoml build`` + ``containerize``."""

    registry: str | None = Field(None, description="e.g. registry.example.com/compoundry; images are "
                                                   "<registry>/compoundry-<engine>[-gpu]:<tag>")
    tag: str | None = Field(None, description="pinned tag of those images (never 'latest')")
    builder: Literal["auto", "docker", "podman", "buildctl"] = Field(
        "auto", description="containerize backend when no registry/tag is set; auto: the first one installed")

    @model_validator(mode="after")
    def _pinned_and_paired(self) -> "ImageSettings":
        if (self.registry is None) != (self.tag is None):
            raise ValueError("images.registry and images.tag go together (or neither: build with bentoml)")
        if self.tag is not None and (self.tag == "latest" or not self.tag.strip()):
            raise ValueError("images.tag must be a pinned tag, not 'latest'")
        return self


class KubernetesSettings(Strict):
    """How the kubernetes target and ``compoundry k8s render`` shape model pods."""

    namespace: str = Field("compoundry", description="namespace the rendered objects go to")
    route_to: Literal["service", "pods"] = Field(
        "pods", description="where gateways send a deployment's calls: each ready pod address of the Service's "
                            "Endpoints (the gateway balances, ejects and sizes lanes per pod), or the Service's "
                            "cluster DNS name (one address: kube-proxy balances)")
    service_account: str = Field("compoundry-model", description="service account of model pods (no API token)")
    mlflow_tracking_uri: ValueRef = Field(
        default_factory=lambda: ValueRef(kind="ConfigMap", name="compoundry-platform", key="MLFLOW_TRACKING_URI"),
        description="where pods read MLFLOW_TRACKING_URI from (never inline)")
    artifact_store: EnvSource | None = Field(
        default_factory=lambda: EnvSource(kind="Secret", name="compoundry-artifact-store"),
        description="Secret/ConfigMap with the artifact store's credentials (AWS_ACCESS_KEY_ID, ...), "
                    "loaded whole as environment variables; null: none")
    images: ImageSettings = ImageSettings()
    image_pull_secrets: list[str] = Field(default_factory=list)
    gpu_node_pool: NodePool = NodePool()
    components: dict[str, ComponentResources] = Field(default_factory=dict,
                                                      description="component name -> resource overrides")
