"""Whether a failed call to a replica may be tried again on another replica.

Only failures where the replica provably did not process the request are
retried (the connection was refused, or reset before any response byte), and
only for idempotent calls: a timeout or a 5xx may have done the work already,
and a retried non-idempotent call could do it twice. The adapter classifies its
transport exception into an :class:`ErrorKind`, puts the failed replica into
the balancer's ``exclude`` set and gives up when the balancer finds no other.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    CONNECT = "connect"  # connection refused / DNS / TLS handshake: nothing was sent
    RESET_BEFORE_RESPONSE = "reset_before_response"  # dropped before any response byte
    TIMEOUT = "timeout"  # the replica may still be working on it
    RESET_AFTER_RESPONSE = "reset_after_response"  # partial response: the work happened
    HTTP_5XX = "http_5xx"
    HTTP_4XX = "http_4xx"  # the request itself is wrong; another replica would say the same


RETRYABLE: frozenset[ErrorKind] = frozenset({ErrorKind.CONNECT, ErrorKind.RESET_BEFORE_RESPONSE})


def should_retry(error_kind: ErrorKind | str, idempotent: bool, attempt: int, max_attempts: int,
                 remaining_deadline_s: float, expected_call_s: float) -> bool:
    """True when one more attempt is allowed and worth making.

    ``attempt``: attempts made so far, the failed one included (1 after the first call).
    ``remaining_deadline_s``: time left of the request's deadline; ``expected_call_s``: what one more
    call is expected to take (e.g. a latency percentile). A retry that cannot finish in time only
    adds load, so it needs ``remaining_deadline_s >= expected_call_s``.
    """
    try:
        kind = ErrorKind(error_kind)
    except ValueError:
        return False  # an unknown kind is not known to be safe
    return (kind in RETRYABLE and idempotent and attempt < max_attempts
            and remaining_deadline_s > 0 and remaining_deadline_s >= expected_call_s)
