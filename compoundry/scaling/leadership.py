"""Which gateway process runs the autoscaler: the holder of the ``autoscaler`` lease in the platform database.

Every gateway ticks; each tick the leader renews its lease and the others try to take it, so a leader that
dies (or stalls past ``ttl_s``) is replaced within ``ttl_s`` plus one tick, and a leader that stops cleanly
hands over at the next tick. A lease row rather than a PostgreSQL advisory lock: the same code on the
embedded SQLite, and an expiry instead of a session that a stuck process can keep open.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

from compoundry.store.leases import Leases

log = logging.getLogger(__name__)
LEASE = "autoscaler"


def gateway_id() -> str:
    """This process, as other gateways see it in the leases and reports tables."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Leadership:
    def __init__(self, leases: Leases, gateway: str, ttl_s: float):
        self.leases, self.gateway, self.ttl_s = leases, gateway, ttl_s
        self.leading = False

    def check(self) -> bool:
        """Renew or take the lease; whether this gateway leads until the next check."""
        leading = self.leases.try_acquire(LEASE, self.gateway, self.ttl_s)
        if leading != self.leading:
            log.info("autoscaler: %s %s", self.gateway, "leads" if leading else
                     f"follows {self.leases.holder(LEASE)}")
        self.leading = leading
        return leading

    def resign(self) -> None:
        if self.leading:
            self.leases.release(LEASE, self.gateway)
            self.leading = False
