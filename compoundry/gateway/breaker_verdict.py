"""What a deployment's circuit breaker hears of an admitted call: the verdict the call's outcome implies.

Apart from the dispatcher so the rule reads in one place: a replica's own failure while others are healthy
is outlier ejection's, a refusal at the gate is a success, a call that never reached a verdict says nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from compoundry.core.routing.breaker import Admission, CircuitBreaker
from compoundry.gateway.errors import (
    ComponentFailed,
    ComponentTimeout,
    ComponentUnavailable,
    GatewayError,
)


@contextmanager
def breaker_verdict(breaker: CircuitBreaker, admission: Admission) -> Iterator[None]:
    """Tell the deployment's breaker how the admitted call went, from how the block exits.

    A failure or timeout counts against the deployment, unless it was one replica's while others are
    healthy (outlier ejection handles that replica); a refusal at the gate
    (4xx, the replica did answer) counts as a success; nothing at all is said
    when the call never reached a verdict: cancelled, shed, no replica free,
    or the client went away mid-stream.
    """
    try:
        yield
    except (ComponentFailed, ComponentTimeout) as exc:
        if exc.replica_fault:  # one replica failed; others of the deployment are healthy: not its verdict
            breaker.record_cancel(admission)
        else:
            breaker.record_failure(admission)
        raise
    except ComponentUnavailable:
        breaker.record_cancel(admission)
        raise
    except GatewayError:
        breaker.record_success(admission)
        raise
    except BaseException:  # cancelled, or the stream's client went away (GeneratorExit)
        breaker.record_cancel(admission)
        raise
    else:
        breaker.record_success(admission)
