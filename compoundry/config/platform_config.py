"""The schema of ``configs/platform.yaml``: ports, state folder, targets, gateway and autoscaler policy.

The resolved values every process uses (environment overrides applied, paths
made absolute) are :class:`compoundry.config.settings.PlatformSettings`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from compoundry.config.base import Strict
from compoundry.config.kubernetes_config import KubernetesSettings
from compoundry.config.rate_limit_config import RateLimitSettings


class Ports(Strict):
    mlflow: PositiveInt = 5000
    prefect: PositiveInt = 4200
    gateway: PositiveInt = 8000


class PortRange(Strict):
    start: PositiveInt = 9100
    end: PositiveInt = 9299

    @model_validator(mode="after")
    def _ordered(self) -> "PortRange":
        if self.end < self.start:
            raise ValueError("end must be >= start")
        return self


class RegistrySettings(Strict):
    webhooks: bool = True
    webhook_tolerance_s: PositiveInt = Field(300, description="max age of a signed webhook delivery")


class ColdStartHold(Strict):
    """How long a request may be held for a replica to become ready, by latency class."""

    interactive: float = Field(10.0, gt=0, description="seconds an interactive request waits for a cold start")
    batch: float = Field(600.0, gt=0, description="seconds a batch request waits for a cold start")


class GatewaySettings(Strict):
    """The Prediction Service's request-path policy (the per-component knobs live in components.yaml)."""

    workers: int | None = Field(None, ge=1, description="gateway worker processes behind the one gateway port "
                                                        "(one leads the autoscaler); null: one per CPU core")
    cold_start_hold_s: ColdStartHold = ColdStartHold()
    max_attempts: int = Field(2, ge=1, le=5, description="tries per call; retries only transport failures "
                                                          "on another replica")
    replica_concurrency: int | None = Field(32, ge=1, description="in-flight requests per replica, all gateway "
                                                                  "processes together, each taking its share "
                                                                  "(calls the gateway gave up on included); "
                                                                  "null: unlimited")
    queue_capacity: int = Field(256, ge=1, description="requests that may wait per component lane")
    shadow_max_in_flight: int = Field(64, ge=0, description="mirrored (shadow) calls in flight per gateway; "
                                                            "beyond this a mirror is skipped, never queued")
    auth_required: bool = Field(True, description="API keys on every prediction and control route")
    blocked_terms: dict[str, list[str]] = Field(default_factory=dict, description="category -> terms, for the "
                                                "block_terms trust hook")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    body_timeout_s: float = Field(10.0, gt=0, description="a request body not fully received by then gets 408 "
                                                          "(a slow or stalled upload cannot hold a connection)")
    fast_path: bool = Field(True, description="answer well-formed JSON prediction calls without FastAPI's "
                                              "per-request machinery (same answers); false: all through FastAPI")
    rate_limits: RateLimitSettings = RateLimitSettings()


class AutoscalerSettings(Strict):
    """The gateway's autoscaler loop (the per-component bounds live in components.yaml ``scaling``)."""

    enabled: bool = Field(True, description="scale replicas on load, from zero on demand, to zero when idle; "
                                            "with several gateways one leads it, the others report to it")
    leader_ttl_s: float = Field(5.0, gt=0, description="a leading gateway that stops renewing its lease for this "
                                                       "long (killed, stalled) is replaced by another")
    tick_s: float = Field(1.0, gt=0, description="how often each deployment's replica count is decided")
    window_s: float = Field(10.0, gt=0, description="arrival rate and latency are measured over this window")
    up_stabilization_s: float = Field(0.0, ge=0, description="a scale-up needs its recommendation held this long")
    down_stabilization_s: float = Field(30.0, ge=0, description="the shortest scale-down window: a scale-down "
                                                                "waits until no higher recommendation was made for "
                                                                "max(this, 2 x the component's cold start)")


class BentoCloudTargetSettings(Strict):
    cluster: str | None = Field(None, description="BentoCloud cluster; null: the account's default")


class PlatformConfig(Strict):
    """The schema of ``configs/platform.yaml``."""

    host: str = "127.0.0.1"
    state_dir: str = Field(".compoundry", description="relative to the repository root unless absolute")
    ports: Ports = Ports()
    replica_ports: PortRange = PortRange()
    target: Literal["local", "kubernetes", "bentocloud"] = Field(
        "local", description="where replicas run unless a component's own target says otherwise (docs/targets.md)")
    kubernetes: KubernetesSettings = KubernetesSettings()
    bentocloud: BentoCloudTargetSettings = BentoCloudTargetSettings()
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite under state_dir")
    registry: RegistrySettings = RegistrySettings()
    route_refresh_s: float = Field(0.5, gt=0, description="how often gateways re-read routes")
    gateway: GatewaySettings = GatewaySettings()
    autoscaler: AutoscalerSettings = AutoscalerSettings()
