"""The trust layer at the gateway's edge: hooks from the pipeline's or component's ``trust:`` config.

``before`` runs on what a client sent, so replicas, logs and metering only
ever see masked text; ``after`` runs on the answer. A blocked request is a
400 ``blocked_content`` naming the category and where in the payload it was
found (never the term). Hook pipelines are built once per configuration.
"""

from __future__ import annotations

from typing import Any

from compoundry.core.trust import TrustSettings, build_pipeline
from compoundry.gateway.errors import GatewayError


class ContentBlocked(GatewayError):
    status, code = 400, "blocked_content"


class TrustLayer:
    def __init__(self, blocked_terms: dict[str, list[str]]):
        self.settings = TrustSettings(blocked_terms=blocked_terms)
        self._pipelines: dict[tuple, Any] = {}

    def before(self, trust, payload: Any) -> Any:
        return self._apply(trust, payload, request=True)

    def after(self, trust, payload: Any) -> Any:
        return self._apply(trust, payload, request=False)

    def _apply(self, trust, payload: Any, request: bool) -> Any:
        hooks = trust.pre if request else trust.post
        if not hooks:
            return payload
        pipeline = self._pipeline(tuple(trust.pre), tuple(trust.post))
        new_payload, report = pipeline.on_request(payload) if request else pipeline.on_response(payload)
        if report.blocked:
            rejection = report.rejection
            body = rejection.error_body()["error"]
            raise ContentBlocked(body["message"], {"category": rejection.category, "path": rejection.path})
        return new_payload

    def _pipeline(self, pre: tuple[str, ...], post: tuple[str, ...]):
        key = (pre, post)
        pipeline = self._pipelines.get(key)
        if pipeline is None:
            pipeline = self._pipelines[key] = build_pipeline(pre, post, self.settings)
        return pipeline
