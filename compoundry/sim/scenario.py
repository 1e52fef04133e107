"""What a simulation runs: the production config models plus what only a simulator needs.

A scenario file holds ``components:`` and ``pipelines:`` in exactly the
``components.yaml`` / ``pipelines.yaml`` schema (the same pydantic models, so
the scaling bounds, prices, modes, SLAs and DAGs are the ones the gateway
would use), ``schedules:`` in the ``schedules.yaml`` schema (scheduled
warm-ups), and two sections of its own: ``models:`` (service time, cold start,
replica capacity per component, and the serverless endpoint's cold start,
concurrency limit and throttling) and ``traffic:`` (the generator's settings).
Loading goes through the config loader, so a typo is reported as file:line.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from compoundry.config.models import Component, Name, Pipeline, Schedule, Strict
from compoundry.core.autoscaling.replica_policy import COLD_STARTS_PER_DOWN_WINDOW

SCENARIOS_DIR = Path(__file__).parent / "scenarios"


class ServerlessModel(Strict):
    """The component's hosted serverless endpoint (ADR 0042; defaults: a typical scale-to-zero endpoint)."""

    cold_start_s: NonNegativeFloat = Field(5.0, description="seconds before concurrency the endpoint did not keep "
                                                            "warm can serve (0: always warm)")
    keep_warm_s: NonNegativeFloat = Field(300.0, description="an idle instance is reclaimed after this long")
    concurrency_limit: PositiveInt | None = Field(200, description="calls in flight at once; above it calls are "
                                                                   "throttled (null: unlimited)")
    retry_after_s: NonNegativeFloat = Field(1.0, description="a throttled call is retried after this long")


class ComponentModel(Strict):
    """How one component behaves on the virtual clock."""

    service_s: PositiveFloat = Field(description="mean service time of one call, seconds")
    service_cv: NonNegativeFloat = Field(0.5, description="coefficient of variation of the service time (lognormal)")
    cold_start_s: PositiveFloat = Field(description="seconds from 'start a replica' to ready")
    slots_per_replica: PositiveInt = Field(description="calls one replica serves at once without slowing down")
    serverless_per_call: NonNegativeFloat = Field(0.0, description="price of one call on the serverless backend")
    serverless_overhead_s: NonNegativeFloat = Field(0.05, description="extra latency of a serverless call")
    serverless: ServerlessModel = Field(default_factory=ServerlessModel,
                                        description="cold starts, concurrency limit and throttling of that backend")


class Spikes(Strict):
    per_week: NonNegativeFloat = Field(2.0, description="mean number of spikes per week (Poisson)")
    factor: tuple[PositiveFloat, PositiveFloat] = Field((10.0, 50.0), description="spike height range, x the rate")
    minutes: tuple[PositiveFloat, PositiveFloat] = Field((5.0, 20.0), description="spike length range")


class BatchWindow(Strict):
    pipeline: Name
    start_hour: float = Field(1.0, ge=0, lt=24)
    hours: PositiveFloat = 3.0
    requests_per_day: NonNegativeFloat = 0.0


class Traffic(Strict):
    """The generator: business-hours days, a weekly cycle, spikes, batch windows, renewal arrivals."""

    days: PositiveFloat = 30
    pipeline: Name = Field(description="the interactive pipeline the users call")
    requests_per_day: PositiveFloat = Field(description="mean interactive requests per day over a week")
    business_hours: tuple[float, float] = (8.0, 18.0)
    ramp_hours: NonNegativeFloat = Field(1.5, description="rise and fall around business hours")
    night_level: float = Field(0.08, ge=0, le=1, description="off-hours rate, relative to business hours")
    weekend_level: float = Field(0.3, ge=0, le=1, description="weekend business-hours rate, relative to weekdays")
    spikes: Spikes = Spikes()
    batch: list[BatchWindow] = Field(default_factory=list)
    interarrival_cv: PositiveFloat = Field(1.0, description="CV of inter-arrival times (1: Poisson)")
    variance_amplification: PositiveFloat = Field(1.0, description="multiplies interarrival_cv (the study: 2)")
    seed: int = 0


class Scenario(Strict):
    """A whole simulation input (``compoundry/sim/scenarios/study.yaml`` is the study's)."""

    description: str = ""
    tick_s: PositiveFloat = Field(10.0, description="virtual seconds per autoscaler decision")
    window_s: PositiveFloat = Field(10.0, description="the autoscaler's observation window")
    down_stabilization_s: NonNegativeFloat = Field(
        30.0, description="platform.yaml autoscaler.down_stabilization_s; the effective window is never under "
                          f"{COLD_STARTS_PER_DOWN_WINDOW:g} x the component's models.cold_start_s, as in the gateway "
                          "(docs/scaling.md)")
    interval_s: PositiveFloat = Field(300.0, description="SLO intervals (the study: 5 minutes)")
    components: dict[Name, Component]
    pipelines: dict[Name, Pipeline]
    invocation: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="pipeline -> step -> probability the step runs (default 1)")
    models: dict[str, ComponentModel]
    schedules: dict[Name, Schedule] = Field(default_factory=dict)
    traffic: Traffic

    @model_validator(mode="after")
    def _consistent(self) -> "Scenario":
        problems = [f"pipeline {p!r} step {s!r} calls unknown component {st.component!r}"
                    for p, pipe in self.pipelines.items() for s, st in pipe.steps.items()
                    if st.component not in self.components]
        problems += [f"component {c!r} has no entry under models:" for c in self.components if c not in self.models]
        problems += [f"invocation names unknown step {p}.{s}" for p, steps in self.invocation.items()
                     for s in steps if p not in self.pipelines or s not in self.pipelines[p].steps]
        names = [self.traffic.pipeline] + [b.pipeline for b in self.traffic.batch]
        problems += [f"traffic names unknown pipeline {n!r}" for n in names if n not in self.pipelines]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def ratio(self, pipeline: str, step: str) -> float:
        """Probability that one request of ``pipeline`` runs ``step`` (the study's invocation ratio)."""
        return self.invocation.get(pipeline, {}).get(step, 1.0)


def load_scenario(path: Path | str) -> Scenario:
    """Read a scenario file; :class:`compoundry.config.loader.ConfigError` names file:line on a mistake."""
    from compoundry.config.loader import load_model_file

    return load_model_file(Path(path), Scenario)


def study_scenario(**traffic_overrides) -> Scenario:
    """The built-in scenario at the study's scale, optionally with other traffic settings."""
    scenario = load_scenario(SCENARIOS_DIR / "study.yaml")
    if not traffic_overrides:
        return scenario
    traffic = scenario.traffic.model_copy(update=traffic_overrides)
    return scenario.model_copy(update={"traffic": Traffic.model_validate(traffic.model_dump())})
