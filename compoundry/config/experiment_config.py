"""Models of ``configs/experiments.yaml``: component-level A/B experiments.

An experiment splits one component's traffic between variants (an MLflow
alias or version each) and says how to judge them: the success metric (user
feedback posted to ``/v1/feedback``, or a metered outcome), the sample size a
decision needs, the longest it may run, and the guardrails whose breach rolls
the challenger back at once. The evaluation itself is in
:mod:`compoundry.core.experiments`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from compoundry.config.base import Name, Strict

#: Outcomes the gateway meters for every call, usable as a success metric without feedback.
METERED_METRICS: dict[str, str] = {"success": "binary", "latency_ms": "continuous"}


class Variant(Strict):
    name: Name
    alias: str | None = None
    version: str | None = None
    weight: NonNegativeInt = Field(description="percent of traffic; all weights sum to 100")

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _alias_or_version(self) -> "Variant":
        if (self.alias is None) == (self.version is None):
            raise ValueError("a variant needs exactly one of 'alias' or 'version'")
        return self


class Shadow(Strict):
    variant: str
    fraction: float = Field(0.0, ge=0, le=1, description="share of requests mirrored to the shadow variant")


class Guardrails(Strict):
    """Limits on a challenger; a breach rolls it back without waiting for significance."""

    max_error_rate: float | None = Field(0.05, ge=0, le=1, description="roll back a challenger whose error rate "
                                                                      "exceeds this")
    max_p95_ms: PositiveFloat | None = Field(None, description="roll back a challenger whose p95 latency (ms) "
                                                               "exceeds this")
    max_p95_ratio: PositiveFloat | None = Field(None, description="roll back a challenger whose p95 exceeds this "
                                                                  "multiple of the control's")
    min_calls: PositiveInt = Field(30, description="calls a challenger needs before a guardrail can trip")


class SuccessMetric(Strict):
    """What "better" means: a feedback signal keyed by request id, or a metered outcome."""

    source: Literal["feedback", "metered"] = "metered"
    name: str = Field("success", description="feedback: the name posted to /v1/feedback; metered: "
                                             + " | ".join(METERED_METRICS))
    kind: Literal["binary", "continuous"] | None = Field(None, description="binary (0/1, Fisher's exact test) or "
                                                                           "continuous (Welch's t-test); metered "
                                                                           "metrics know their own")
    goal: Literal["maximize", "minimize"] | None = Field(None, description="default: maximize, but minimize "
                                                                           "for latency_ms")

    @model_validator(mode="after")
    def _metered_known(self) -> "SuccessMetric":
        if self.source == "metered":
            if self.name not in METERED_METRICS:
                raise ValueError(f"unknown metered metric {self.name!r} (known: {', '.join(METERED_METRICS)})")
            if self.kind not in (None, METERED_METRICS[self.name]):
                raise ValueError(f"metered metric {self.name!r} is {METERED_METRICS[self.name]}, not {self.kind}")
        return self

    @property
    def measure(self) -> Literal["binary", "continuous"]:
        if self.source == "metered":
            return METERED_METRICS[self.name]  # type: ignore[return-value]
        return self.kind or "binary"

    @property
    def maximize(self) -> bool:
        if self.goal is not None:
            return self.goal == "maximize"
        return self.name != "latency_ms"


class Experiment(Strict):
    component: str
    enabled: bool = True
    sticky_key: Literal["session", "user", "request"] = "session"
    variants: list[Variant] = Field(min_length=1)
    shadow: Shadow | None = None
    control: str | None = Field(None, description="the variant the others are compared with (default: the first)")
    metric: SuccessMetric = SuccessMetric()
    method: Literal["always_valid", "fixed"] = Field(
        "always_valid", description="always_valid: a mixture SPRT, safe to evaluate at every look (hourly, on "
                                    "demand); fixed: one fixed-horizon test once every variant has planned_units")
    planned_units: PositiveInt | None = Field(
        None, description="units (sticky keys) per variant: fixed — the planned sample size, required; "
                          "always_valid — where its interval is tightest (default 1000)")
    cuped: bool = Field(False, description="reduce variance with each unit's pre-experiment value of the metric "
                                           "(CUPED) where the observations carry one")
    min_samples: PositiveInt = Field(100, description="units (sticky keys with a metric value) each variant needs "
                                                      "before a decision")
    max_duration_h: PositiveFloat = Field(168, description="end without a winner after this many hours")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="type-I error over the whole run, every look included "
                                                         "(Bonferroni-corrected across challengers)")
    guardrails: Guardrails = Guardrails()

    @property
    def unit(self) -> str:
        """The unit of analysis: the unit of assignment (the sticky key)."""
        return self.sticky_key

    @property
    def control_variant(self) -> str:
        return self.control or self.variants[0].name

    @property
    def challengers(self) -> list[str]:
        return [v.name for v in self.variants if v.name != self.control_variant]

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    @field_validator("variants")
    @classmethod
    def _split(cls, v: list[Variant]) -> list[Variant]:
        names = [x.name for x in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate variant name(s): {', '.join(dupes)}")
        total = sum(x.weight for x in v)
        if total != 100:
            raise ValueError(f"variant weights sum to {total}, they must sum to 100")
        return v

    @field_validator("shadow")
    @classmethod
    def _known_variant(cls, v: Shadow | None, info: ValidationInfo) -> Shadow | None:
        variants = info.data.get("variants")
        if v is not None and variants is not None and v.variant not in {x.name for x in variants}:
            known = ", ".join(x.name for x in variants)
            raise ValueError(f"shadow variant {v.variant!r} is not a variant (known: {known})")
        return v

    @model_validator(mode="after")
    def _fixed_is_planned(self) -> "Experiment":
        if self.method == "fixed" and self.planned_units is None:
            raise ValueError("method: fixed needs planned_units (the sample size per variant from a power "
                             "calculation); or drop method for the always-valid test")
        return self

    @model_validator(mode="after")
    def _control_known(self) -> "Experiment":
        if self.control is not None and self.control not in {v.name for v in self.variants}:
            known = ", ".join(v.name for v in self.variants)
            raise ValueError(f"control {self.control!r} is not a variant (known: {known})")
        return self


class ExperimentsFile(Strict):
    """``configs/experiments.yaml``."""

    experiments: dict[Name, Experiment] = Field(default_factory=dict)
