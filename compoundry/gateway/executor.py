"""Run a pipeline DAG: each step starts the moment its own dependencies are done.

Pure asyncio with an injected ``call(component, inputs, timeout_s)`` and clock,
so unit tests drive it with fake components and the gateway with real
replicas. One task per step awaits its dependencies' tasks, rather than
running level by level: a fast branch never waits for a slow sibling level.

Failure rules (configs/pipelines.yaml): an optional step that fails yields its
``fallback`` (static ``output``, or ``component`` called with the same inputs),
or None without one, and the pipeline carries on. A required step that fails
cancels everything still pending; the result is partial and names that step.
Every call is bounded by the step's ``timeout_s`` (else the component's request
timeout) and never runs past the pipeline's SLA deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from compoundry.core.dag import critical_path, topological_levels
from compoundry.core.templating import render
from compoundry.gateway.errors import ComponentTimeout, GatewayError

Call = Callable[[str, Any, float], Awaitable[Any]]
_tracer = trace.get_tracer("compoundry.gateway")
#: The step a ``call`` is made for (each step runs in its own task, so this is per step): for metering.
CURRENT_STEP: ContextVar[str | None] = ContextVar("compoundry_step", default=None)
DEFAULT_TIMEOUT_S = 30.0

OK, FALLBACK, FAILED, SKIPPED = "ok", "fallback", "failed", "skipped"


@dataclass(frozen=True)
class ComponentReply:
    """What ``call`` may return to tell the executor which deployment answered; a bare value works too."""

    output: Any
    deployment: str | None = None
    model_version: str | None = None
    variant: str | None = None  # the experiment variant that answered (or the component's serving alias)


@dataclass
class StepRecord:
    """One step's outcome; times are milliseconds since the pipeline started."""

    component: str
    status: str = SKIPPED
    deployment: str | None = None
    fallback: str | None = None  # "static" or the fallback component, when one was used
    started_ms: float | None = None
    ended_ms: float | None = None
    duration_ms: float | None = None
    error: str | None = None
    error_code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)  # every field a scalar: asdict()'s deep copy costs on each pipeline answer


@dataclass
class PipelineResult:
    output: Any
    steps: dict[str, StepRecord]
    critical_path: list[str] = field(default_factory=list)
    critical_path_ms: float = 0.0
    total_ms: float = 0.0
    overhead_ms: float = 0.0
    failed_step: str | None = None
    error: str | None = None  # set when a required step failed or the output could not be rendered
    cause: BaseException | None = field(default=None, repr=False)  # what the failed step raised

    @property
    def ok(self) -> bool:
        return self.error is None

    def steps_dict(self) -> dict[str, dict[str, Any]]:
        return {name: record.as_dict() for name, record in self.steps.items()}


class StepFailed(Exception):
    """A required step failed: the pipeline stops."""

    def __init__(self, step: str, cause: BaseException):
        super().__init__(f"step {step!r} failed: {describe(cause)}")
        self.step = step
        self.cause = cause


class _Skipped(Exception):
    """A dependency failed, so this step never ran."""


def describe(exc: BaseException) -> str:
    if isinstance(exc, GatewayError):
        return exc.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def run_pipeline(
    pipeline: Any,
    request_inputs: dict[str, Any],
    call: Call,
    clock: Callable[[], float] = time.perf_counter,
    *,
    timeouts: Mapping[str, float] | None = None,
    name: str = "pipeline",
) -> PipelineResult:
    """Run ``pipeline`` (a config ``Pipeline``) for one request; never raises for a step failure.

    ``timeouts`` maps component -> request timeout in seconds (``DEFAULT_TIMEOUT_S`` otherwise).
    An OpenTelemetry span covers the run, with one child span per step (no-ops without an SDK).
    """
    with _tracer.start_as_current_span(f"pipeline {name}", attributes={"compoundry.pipeline": name}) as span:
        result = await _Run(pipeline, request_inputs, call, clock, timeouts or {}).execute()
        span.set_attributes({"compoundry.ok": result.ok, "compoundry.total_ms": result.total_ms,
                             "compoundry.overhead_ms": result.overhead_ms,
                             "compoundry.critical_path": ",".join(result.critical_path)})
        if not result.ok:
            span.set_status(trace.StatusCode.ERROR, result.error or "")
        return result


class _Run:
    """The state of one pipeline execution."""

    def __init__(self, pipeline, request_inputs, call: Call, clock, timeouts: Mapping[str, float]):
        self.pipeline = pipeline
        self.call = call
        self.clock = clock
        self.timeouts = timeouts
        self.t0 = clock()
        self.deadline = self.t0 + pipeline.sla_ms / 1000.0
        self.outputs: dict[str, Any] = {}
        self.context = {"request": request_inputs, "steps": self.outputs}
        self.records = {name: StepRecord(component=step.component) for name, step in pipeline.steps.items()}
        self._start: dict[str, float] = {}
        self._end: dict[str, float] = {}

    # --- orchestration -----------------------------------------------------
    async def execute(self) -> PipelineResult:
        deps = {name: list(step.depends_on) for name, step in self.pipeline.steps.items()}
        tasks: dict[str, asyncio.Task] = {}
        for name in (n for level in topological_levels(deps) for n in level):
            tasks[name] = asyncio.create_task(self._step(name, [tasks[d] for d in deps[name]]))
        try:
            failure = await self._wait(tasks)
        finally:
            await _cancel(tasks.values())
        self._mark_cancelled()
        if failure is not None:
            return self._result(None, deps, failure.step, str(failure), failure.cause)
        try:
            output = self._render_output()
        except Exception as exc:  # a template over a replica's output that lacks the key
            return self._result(None, deps, None, f"pipeline output: {describe(exc)}")
        return self._result(output, deps, None, None)

    async def _wait(self, tasks: dict[str, asyncio.Task]) -> StepFailed | None:
        """Wait for all steps, or for the first required failure (returned)."""
        done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
        failures = [t.exception() for t in done if not t.cancelled() and isinstance(t.exception(), StepFailed)]
        if not failures:
            return None
        return min(failures, key=lambda f: self._end.get(f.step, float("inf")))

    async def _step(self, name: str, deps: list[asyncio.Task]) -> None:
        if deps:
            await asyncio.wait(deps)
            if any(d.cancelled() or d.exception() is not None for d in deps):
                raise _Skipped(name)
        with _tracer.start_as_current_span(f"step {name}", attributes={"compoundry.step": name}) as span:
            try:
                await self._run_step(name)
            finally:
                record = self.records[name]
                span.set_attributes({"compoundry.component": record.component, "compoundry.status": record.status,
                                     "compoundry.deployment": record.deployment or ""})
                if record.status == FAILED:
                    span.set_status(trace.StatusCode.ERROR, record.error or "")

    async def _run_step(self, name: str) -> None:
        CURRENT_STEP.set(name)
        step = self.pipeline.steps[name]
        record = self.records[name]
        self._start[name] = self.clock()
        inputs = None
        try:
            inputs = render(step.inputs, self.context)
            reply = await self._call(step.component, inputs, step.timeout_s)
            self._finish(name, OK, reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(record, exc)
            if not step.optional:
                self._end[name] = self.clock()
                self._stamp(name)
                raise StepFailed(name, exc) from exc
            await self._fallback(name, step, inputs)

    async def _fallback(self, name: str, step, inputs: Any) -> None:
        """An optional step failed: static output, fallback component, or None."""
        fallback = step.fallback
        if fallback is None:
            self._finish(name, FAILED, None, keep_error=True)
        elif fallback.component is None:
            self.records[name].fallback = "static"
            self._finish(name, FALLBACK, fallback.output, keep_error=True)
        elif inputs is None:  # the inputs never rendered: nothing to send to the fallback
            self._finish(name, FAILED, None, keep_error=True)
        else:
            self.records[name].fallback = fallback.component
            try:
                reply = await self._call(fallback.component, inputs, None)
                self._finish(name, FALLBACK, reply, keep_error=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                record = self.records[name]
                record.error = f"{record.error}; fallback {fallback.component}: {describe(exc)}"
                self._finish(name, FAILED, None, keep_error=True)

    async def _call(self, component: str, inputs: Any, step_timeout: float | None) -> Any:
        budget = step_timeout or self.timeouts.get(component, DEFAULT_TIMEOUT_S)
        remaining = self.deadline - self.clock()
        timeout = min(budget, remaining)
        if timeout <= 0:
            raise ComponentTimeout(f"pipeline SLA of {self.pipeline.sla_ms} ms spent before calling {component}")
        try:
            async with asyncio.timeout(timeout):
                return await self.call(component, inputs, timeout)
        except TimeoutError as exc:
            why = "the pipeline SLA deadline" if remaining < budget else "its timeout"
            raise ComponentTimeout(f"{component} did not answer within {timeout:.3f}s ({why})") from exc

    # --- bookkeeping ---------------------------------------------------------
    def _finish(self, name: str, status: str, reply: Any, keep_error: bool = False) -> None:
        record = self.records[name]
        output = reply.output if isinstance(reply, ComponentReply) else reply
        if isinstance(reply, ComponentReply):
            record.deployment = reply.deployment
        self.outputs[name] = output
        self._end[name] = self.clock()
        record.status = status
        if not keep_error:
            record.error = record.error_code = None
        self._stamp(name)

    def _fail(self, record: StepRecord, exc: BaseException) -> None:
        record.status = FAILED
        record.error = describe(exc)
        record.error_code = exc.code if isinstance(exc, GatewayError) else "step_error"

    def _stamp(self, name: str) -> None:
        record = self.records[name]
        start, end = self._start[name], self._end[name]
        record.started_ms = _ms(start - self.t0)
        record.ended_ms = _ms(end - self.t0)
        record.duration_ms = _ms(end - start)

    def _mark_cancelled(self) -> None:
        """Steps that never ran, or were cancelled mid-call, are ``skipped``."""
        now = self.clock()
        for name, record in self.records.items():
            if name in self._start and name not in self._end:
                self._end[name] = now
                record.status = SKIPPED
                record.error = "cancelled: a required step failed"
                self._stamp(name)

    def _render_output(self) -> Any:
        if self.pipeline.output is None:
            return dict(self.outputs)
        return render(self.pipeline.output, self.context)

    def _result(self, output: Any, deps, failed_step: str | None, error: str | None,
                cause: BaseException | None = None) -> PipelineResult:
        ran = {n for n, r in self.records.items() if r.status != SKIPPED and n in self._end}
        started = {n: self._start[n] for n in ran}
        ended = {n: self._end[n] for n in ran}
        path = critical_path(deps, started, ended)
        path_ms = _ms(sum(self._end[n] - self._start[n] for n in path))
        total = _ms(self.clock() - self.t0)
        return PipelineResult(
            output=output, steps=self.records, critical_path=path, critical_path_ms=path_ms,
            total_ms=total, overhead_ms=round(max(0.0, total - path_ms), 3), failed_step=failed_step, error=error,
            cause=cause,
        )


async def _cancel(tasks) -> None:
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    for task in tasks:  # retrieve exceptions so asyncio does not log "never retrieved"
        if task.done() and not task.cancelled():
            task.exception()


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
