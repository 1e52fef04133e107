"""A component's ``limits`` on the request path: the pure check (``core.request_limits``) as a gateway error."""

from __future__ import annotations

from typing import Any

from compoundry.core.request_limits import limit_violation
from compoundry.gateway.errors import LimitExceeded


def check_limits(component: str, limits, inputs: Any) -> None:
    """Raise :class:`LimitExceeded` (413 for size, 400 for a parameter) if ``inputs`` break ``limits``."""
    violation = limit_violation(inputs, limits.max_inputs, limits.max_chars, limits.max_tokens)
    if violation is not None:
        raise LimitExceeded(f"{component}: {violation.message}", {"component": component, "limit": violation.limit},
                            status=413 if violation.too_large else 400,
                            code="request_too_large" if violation.too_large else "invalid_request")
