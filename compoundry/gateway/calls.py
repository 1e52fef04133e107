"""What every component call carries and leaves behind: its context in, its record out.

``CallContext`` is built once per client request (from headers and the API
key's tenant) and shared by every step; ``CallRecord`` is what the dispatcher
reports after each call, for metering and metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compoundry.core.costs.history import attributed_pipeline
from compoundry.gateway.errors import InvalidRequest


@dataclass(frozen=True)
class CallContext:
    """Who asks and by when; the same for every step of one pipeline request."""

    request_id: str
    latency_class: str = "interactive"
    deadline: float | None = None  # clock() time after which the answer is useless; None: no overall deadline
    pipeline: str | None = None
    session: str | None = None
    user: str | None = None  # X-User-Id: the sticky key of experiments configured with sticky_key: user
    tenant: str | None = None
    step: str | None = None


@dataclass(frozen=True)
class CallRecord:
    """What happened on one component call: for metering, metrics and logs."""

    context: CallContext
    component: str
    deployment: str | None
    model_version: str | None
    outcome: str  # "ok" or the error code
    attempts: int
    cold_start_ms: float
    compute_ms: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    variant: str | None = None  # the experiment variant that answered, else the component's serving alias
    shadow: bool = False  # a mirrored copy whose answer nobody saw
    unit_key: str | None = None  # an experiment's sticky key for this call (per-session/user analysis)


LATENCY_CLASSES = ("interactive", "batch")


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as both doors (the fast path, FastAPI's routes) know it: its id, its headers
    (``get`` by lower-case name) and the API key's principal (None when auth is off)."""

    request_id: str
    headers: Mapping[str, str]
    principal: Any = None


def caller_of(request) -> Caller:
    """The :class:`Caller` of a Starlette ``Request``."""
    return Caller(request.state.request_id, request.headers, getattr(request.state, "principal", None))


def caller_context(headers: Mapping[str, str], pipelines: Mapping[str, Any], principal, request_id: str,
                   default_class: str, pipeline: str | None = None, deadline: float | None = None) -> CallContext:
    """The caller's context from the ``X-Latency-Class``, ``X-Pipeline-Id``, ``X-Session-Id`` and ``X-User-Id``
    headers (``headers.get`` takes lower-case names).

    ``pipeline`` is the pipeline the gateway runs itself and wins over the header. A client's
    ``X-Pipeline-Id`` is metered only when it names a pipeline of the live config; any other value is
    recorded as ``(unregistered)``, never as the client's free text (cost reports group by it).
    """
    if pipeline is None:
        pipeline = attributed_pipeline(headers.get("x-pipeline-id"), pipelines) or None
    latency_class = (headers.get("x-latency-class") or default_class).strip().lower()
    if latency_class not in LATENCY_CLASSES:
        raise InvalidRequest(f"X-Latency-Class must be one of {', '.join(LATENCY_CLASSES)}",
                             {"got": latency_class[:40]})
    return CallContext(request_id=request_id, latency_class=latency_class, deadline=deadline,
                       pipeline=pipeline, session=headers.get("x-session-id"),
                       user=headers.get("x-user-id"),
                       tenant=principal.tenant if principal else None)


def stream_usage(line: str) -> tuple[int, int] | None:
    """Token counts from one server-sent event of a stream (the last chunk carries ``usage`` when asked for)."""
    if not line.startswith("data: {"):
        return None
    try:
        chunk = json.loads(line[6:])
    except ValueError:
        return None
    return token_usage(chunk) if isinstance(chunk.get("usage"), dict) else None  # "usage": null mid-stream


def token_usage(output: Any) -> tuple[int, int]:
    """Token counts from an llm answer (Bento ``{"usage"}`` or OpenAI ``usage``); (0, 0) otherwise."""
    usage = output.get("usage") if isinstance(output, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    counts = (usage.get("prompt_tokens"), usage.get("completion_tokens"))
    return tuple(c if isinstance(c, int) and c >= 0 else 0 for c in counts)  # a backend's odd usage is not our 500
