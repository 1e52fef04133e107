"""Turn the dispatcher's call records into metering records for the batched sink.

Runs on the request path: it only builds a record, writes it to the sink's spool and appends it to
the sink's buffer; the sink's own thread writes batches. A call made for a request is *held* until
the request's answer was sent (:class:`RequestMetering`, from the outermost middleware), so its row
says whether the client got the answer; a mirrored (shadow) call has no client and is queued at once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from datetime import datetime, timedelta, timezone

from compoundry.core.costs.records import (
    OK,
    SHED,
    MeteringRecord,
    error_outcome,
    price_call,
)
from compoundry.gateway.calls import CallRecord
from compoundry.metering import MeteringSink

MODES = {"dedicated", "serverless", "auto"}
_HELD: ContextVar[list | None] = ContextVar("compoundry_request_metering", default=None)


class RequestMetering:
    """One request's metering: its calls' records are spooled as they end and queued for the database when
    the answer has been sent, with ``delivered`` saying whether it was (a pipeline's steps run in child
    tasks, which share the request's list through the context they copy)."""

    def __init__(self, sink: MeteringSink):
        self.sink = sink

    def begin(self) -> Token:
        return _HELD.set([])

    def end(self, token: Token, delivered: bool) -> None:
        held = _HELD.get()
        _HELD.reset(token)
        if held:
            self.sink.release(held, delivered)


def metering_callback(sink: MeteringSink, components: Callable[[], dict]) -> Callable[[CallRecord], None]:
    def on_call(call: CallRecord) -> None:
        config = components().get(call.component)
        outcome = {"ok": OK, "overloaded": SHED}.get(call.outcome) or error_outcome(call.outcome)
        prices = config.prices if config is not None else None
        cost = price_call(prices, prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
                          outcome=outcome) if prices is not None else 0.0
        ctx = call.context
        record = MeteringRecord(
            timestamp=_started(call), tenant=ctx.tenant or "anonymous",
            pipeline_id=ctx.pipeline or "", request_id=ctx.request_id, step=ctx.step, component=call.component,
            variant=call.variant or call.model_version or "", deployment_id=call.deployment or "",
            mode=_mode(call, config),
            latency_class=ctx.latency_class, cold_start_ms=call.cold_start_ms, compute_ms=call.compute_ms,
            prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens, outcome=outcome,
            cost=cost, shadow=call.shadow, unit_key=call.unit_key[:110] if call.unit_key else None)
        held = _HELD.get()
        if held is None or call.shadow:
            sink.record(record)
        else:
            held.append((record, sink.hold(record)))
    return on_call


def _started(call: CallRecord) -> datetime:
    """When the call started (the record's documented meaning): the dispatcher reports it once it ended.

    The cost report's latency decomposition places each step on the pipeline's timeline from this.
    """
    return datetime.now(timezone.utc) - timedelta(milliseconds=call.cold_start_ms + call.compute_ms)


def _mode(call: CallRecord, config) -> str:
    if (call.deployment or "").startswith("external:"):
        return "external"
    return config.mode if config is not None and config.mode in MODES else "dedicated"
