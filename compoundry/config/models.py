"""Pydantic models of ``configs/*.yaml``.

Every model forbids unknown keys so a typo (``max_replica``) is an error with a
line number rather than a silently ignored setting. Rules that involve one file
only live here; rules that look across files (a step naming an unknown
component, DAG checks) live in :mod:`compoundry.config.loader`.
"""

from __future__ import annotations

import zoneinfo
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from croniter import croniter
from pydantic import (
    BaseModel,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from compoundry.config.base import Name, StepName, Strict  # noqa: F401  (re-exported)
from compoundry.config.experiment_config import (  # noqa: F401  (re-exported)
    Experiment,
    ExperimentsFile,
    Shadow,
    Variant,
)
from compoundry.config.platform_config import PlatformConfig
from compoundry.core.dag import referenced_request_keys, topological_levels
from compoundry.core.trust import BUILTIN_HOOKS

#: The Prefect flows a schedule may start (``schedules.yaml`` ``flow:``).
KNOWN_FLOWS: tuple[str, ...] = ("registry-poll", "scheduled-warmup", "cost-report", "evaluate-experiment")

Engine = Literal["sentence-transformers", "pyfunc", "llm"]
Mode = Literal["dedicated", "serverless", "auto"]
Target = Literal["local", "kubernetes", "bentocloud"]
LatencyClass = Literal["interactive", "batch"]

# --------------------------------------------------------------------------- components.yaml
class Scaling(Strict):
    min_replicas: NonNegativeInt = Field(0, description="replicas kept up even when idle (provisioned concurrency)")
    max_replicas: PositiveInt = Field(1, description="upper bound on replicas; >= min_replicas")
    target_concurrency: PositiveInt = Field(8, description="in-flight requests per replica the autoscaler aims for")
    idle_window_s: PositiveFloat = Field(300, description="seconds without traffic before scaling down to min")

    @field_validator("max_replicas")
    @classmethod
    def _above_min(cls, v: int, info: ValidationInfo) -> int:
        low = info.data.get("min_replicas")
        if low is not None and v < low:
            raise ValueError(f"max_replicas ({v}) must be >= min_replicas ({low})")
        return v


class Timeouts(Strict):
    request_s: PositiveFloat = Field(30, description="one call to a ready replica")
    cold_start_s: PositiveFloat = Field(120, description="how long a replica may take to become ready")


class Breaker(Strict):
    consecutive_failures: PositiveInt = Field(5, description="open after this many failures in a row")
    error_rate: float = Field(0.5, gt=0, le=1, description="or when this fraction of calls in the window fail")
    window_s: PositiveFloat = Field(30, description="sliding window for error_rate")
    cooldown_s: PositiveFloat = Field(15, description="how long the breaker stays open before a trial call")


class Limits(Strict):
    """Bounded work per call, checked at the gateway before any replica sees the inputs (defaults follow
    OpenAI's embeddings API: 2,048 inputs, ~8k tokens per text)."""

    max_inputs: PositiveInt = Field(2048, description="items in any list of a call's inputs (texts, rows, "
                                                      "messages); more gets 413")
    max_chars: PositiveInt = Field(32768, description="characters in any one string of a call's inputs; "
                                                      "more gets 413")
    max_tokens: PositiveInt = Field(8192, description="completion tokens one call may ask for (max_tokens); "
                                                      "more gets 400")
    abandoned_busy_s: NonNegativeFloat = Field(
        30.0, description="after the gateway gives up on a call (timeout), how long it still counts the call "
                          "on its replica (for balancing and scaling) while waiting for the replica to finish; "
                          "0 closes the connection at once (for servers that stop work when it closes)")


class Prices(Strict):
    replica_hour: NonNegativeFloat = Field(0.0, description="cost of one replica for one hour")
    per_call: NonNegativeFloat = Field(0.0, description="cost of one invocation")
    per_1k_tokens: NonNegativeFloat = Field(0.0, description="cost per 1000 tokens (llm engines)")


class OpenAIEndpoint(Strict):
    """Any OpenAI-compatible server (a vLLM server, NVIDIA NIM, a hosted API)."""

    url: str = Field(description="base URL up to /v1, e.g. http://gpu-box:8000/v1", pattern=r"^https?://")
    model: str = Field(min_length=1, description="the model name that endpoint serves")
    api_key_env: str | None = Field(None, description="environment variable holding its API key (never the key)")


class BedrockModel(Strict):
    """An Amazon Bedrock model, called with boto3's Converse API (llm engines)."""

    model_id: str = Field(min_length=1, description="e.g. anthropic.claude-3-haiku-20240307-v1:0")
    region: str = Field("us-east-1", min_length=1)


class Serverless(Strict):
    """Where serverless traffic goes when it is not the component's own scale-to-zero replicas."""

    openai: OpenAIEndpoint | None = None
    bedrock: BedrockModel | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "Serverless":
        if (self.openai is None) == (self.bedrock is None):
            raise ValueError("serverless needs exactly one of 'openai' or 'bedrock'")
        return self


class Trust(Strict):
    """Trust-layer hooks: ``pre`` on what comes in (before any model, log or metering sees it), ``post`` on answers."""

    pre: list[str] = Field(default_factory=lambda: ["mask_pii"], description="e.g. [mask_pii, block_terms]")
    post: list[str] = Field(default_factory=list)

    @field_validator("pre", "post")
    @classmethod
    def _known_hooks(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in BUILTIN_HOOKS]
        if unknown:
            raise ValueError(f"unknown trust hook(s) {', '.join(unknown)}; known: {', '.join(sorted(BUILTIN_HOOKS))}")
        return names


class Expectation(BaseModel):
    """One Great Expectations expectation: its snake_case name and its arguments (``column``, ``value_set``...)."""

    model_config = {"extra": "allow"}
    type: str = Field(pattern=r"^expect_[a-z0-9_]+$", description="e.g. expect_column_values_to_not_be_null")


class Evaluation(Strict):
    """The gate a version's evaluation dataset must pass before it deploys."""

    dataset: str = Field(description="artifact path in the version's MLflow run, e.g. eval/intents_eval.csv "
                                     "(.csv, .parquet, .json or .jsonl)")
    required: bool = Field(False, description="fail the deploy when the version has no such dataset "
                                              "(default: deploy without the gate, and say so)")
    expectations: list[Expectation] = Field(min_length=1)


class Component(Strict):
    """A logical model endpoint that pipelines call by name."""

    description: str = ""
    model: str = Field(description="registered MLflow model name", min_length=1)
    alias: str = Field("champion", description="MLflow alias this component serves", min_length=1)
    engine: Engine
    mode: Mode = "serverless"
    target: Target | None = Field(None, description="where its replicas run: local | kubernetes | bentocloud; "
                                                    "null: platform.yaml's target (docs/targets.md)")
    latency_class: LatencyClass = "interactive"
    scaling: Scaling = Scaling()
    timeouts: Timeouts = Timeouts()
    breaker: Breaker = Breaker()
    prices: Prices = Prices()
    limits: Limits = Limits()
    engine_options: dict[str, Any] = Field(default_factory=dict, description="passed to the Bento as JSON")
    serverless: Serverless | None = Field(None, description="an external endpoint for serverless traffic: "
                                                            "always in mode serverless, on spill-over in auto")
    trust: Trust = Field(default_factory=Trust, description="hooks for direct calls (/v1/components, OpenAI routes)")
    evaluation: Evaluation | None = Field(None, description="a Great Expectations gate on each version's evaluation "
                                                            "dataset, run before it deploys")

    @model_validator(mode="after")
    def _external_fits_the_engine(self) -> "Component":
        if self.serverless is not None and self.serverless.bedrock is not None and self.engine != "llm":
            raise ValueError("a bedrock serverless backend serves llm components only")
        if self.serverless is not None and self.engine == "pyfunc":
            raise ValueError("external serverless backends serve llm and sentence-transformers components")
        return self


class ComponentsFile(Strict):
    """``configs/components.yaml``."""

    components: dict[Name, Component] = Field(default_factory=dict)


# --------------------------------------------------------------------------- pipelines.yaml
class Fallback(Strict):
    """What an optional step yields when it fails: a static ``output`` or another ``component``."""

    output: Any = None
    component: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "Fallback":
        given = {"output", "component"} & self.model_fields_set
        if len(given) != 1:
            raise ValueError("fallback needs exactly one of 'output' or 'component'")
        return self


class Step(Strict):
    component: str = Field(min_length=1)
    description: str = ""
    depends_on: list[str] = Field(default_factory=list)
    inputs: Any = Field(default_factory=dict, description="JSON value; strings may hold ${...} templates")
    optional: bool = False
    fallback: Fallback | None = None
    timeout_s: PositiveFloat | None = Field(None, description="overrides the component's timeouts.request_s")

    @field_validator("fallback")
    @classmethod
    def _only_optional(cls, v: Fallback | None, info: ValidationInfo) -> Fallback | None:
        if v is not None and not info.data.get("optional", False):
            raise ValueError("fallback is only allowed on a step with optional: true")
        return v


class PipelineInput(Strict):
    """One key of a pipeline request's ``inputs``, checked at the gateway (422 when wrong)."""

    type: Literal["string", "integer", "number", "boolean", "array", "object"] = "string"
    required: bool = True
    max_length: PositiveInt | None = Field(None, description="strings: characters; arrays: items")


class Pipeline(Strict):
    description: str = ""
    latency_class: LatencyClass = "interactive"
    sla_ms: PositiveInt = Field(10_000, description="end-to-end latency objective")
    trust: Trust = Field(default_factory=Trust, description="hooks on the pipeline's request and output")
    prewarm: bool = Field(True, description="warm every component of the pipeline when its first step is hit")
    inputs: dict[str, PipelineInput] = Field(default_factory=dict, description="the request inputs the steps "
                                             "read, with their types; without it every key a template reads "
                                             "is required, of any type")
    steps: dict[StepName, Step]
    output: Any = Field(None, description="JSON value with ${...} templates; the pipeline's response")

    @field_validator("steps")
    @classmethod
    def _not_empty(cls, v: dict) -> dict:
        if not v:
            raise ValueError("a pipeline needs at least one step")
        return v

    @property
    def dependencies(self) -> dict[str, list[str]]:
        """``step -> depends_on``, the shape :mod:`compoundry.core.dag` works on."""
        return {name: list(step.depends_on) for name, step in self.steps.items()}

    def levels(self) -> list[list[str]]:
        """Steps grouped by what can run in parallel (valid only after cross-file validation)."""
        return topological_levels(self.dependencies)

    @cached_property
    def request_keys(self) -> frozenset[str]:
        """The request input keys its templates read (steps' inputs and fallbacks, the output)."""
        values = [s.inputs for s in self.steps.values()] + [self.output]
        values += [s.fallback.output for s in self.steps.values() if s.fallback is not None]
        return frozenset().union(*(referenced_request_keys(v) for v in values))

    @property
    def components(self) -> list[str]:
        """Components this pipeline calls (steps and fallbacks), in step order, no duplicates."""
        names = [s.component for s in self.steps.values()]
        names += [s.fallback.component for s in self.steps.values() if s.fallback and s.fallback.component]
        return list(dict.fromkeys(names))


class PipelinesFile(Strict):
    """``configs/pipelines.yaml``."""

    pipelines: dict[Name, Pipeline] = Field(default_factory=dict)


# --------------------------------------------------------------------------- schedules.yaml
class Schedule(Strict):
    flow: str = Field(description="one of " + ", ".join(KNOWN_FLOWS))
    cron: str = Field(description="cron expression: 5 fields (minute hour day month weekday), e.g. '*/2 * * * *', "
                                  "or 6 with seconds last, e.g. '* * * * * */30'")
    timezone: str = "UTC"
    enabled: bool = True
    parameters: dict[str, Any] = Field(default_factory=dict, description="passed to the flow run")

    @field_validator("flow")
    @classmethod
    def _known_flow(cls, v: str) -> str:
        if v not in KNOWN_FLOWS:
            raise ValueError(f"unknown flow {v!r} (known: {', '.join(KNOWN_FLOWS)})")
        return v

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str) -> str:
        if not croniter.is_valid(v):
            raise ValueError(f"invalid cron expression {v!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _valid_tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r}") from None
        return v


class SchedulesFile(Strict):
    """``configs/schedules.yaml``."""

    schedules: dict[Name, Schedule] = Field(default_factory=dict)


# --------------------------------------------------------------------------- the bundle
#: file stem -> (file model, top-level key or None when the file *is* the model)
FILE_MODELS: dict[str, tuple[type[BaseModel], str | None]] = {
    "platform": (PlatformConfig, None),
    "components": (ComponentsFile, "components"),
    "pipelines": (PipelinesFile, "pipelines"),
    "experiments": (ExperimentsFile, "experiments"),
    "schedules": (SchedulesFile, "schedules"),
}


class Config(Strict):
    """Everything in ``configs/``, validated within and across files."""

    config_dir: Path
    platform: PlatformConfig = PlatformConfig()
    components: dict[str, Component] = Field(default_factory=dict)
    pipelines: dict[str, Pipeline] = Field(default_factory=dict)
    experiments: dict[str, Experiment] = Field(default_factory=dict)
    schedules: dict[str, Schedule] = Field(default_factory=dict)
    sources: dict[str, Path] = Field(default_factory=dict, description="file stem -> path it was read from")
