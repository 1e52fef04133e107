"""Named leases in the platform database: a lock that works across processes and machines, and expires.

Why a lease row and not a PostgreSQL advisory lock: it works the same on the embedded SQLite, it is
visible (`SELECT * FROM leases`), and a holder that dies (a killed flow run) frees it when its TTL runs
out instead of wedging every later deploy. Taking a lease is one conditional ``UPDATE`` (or the first
``INSERT``), atomic on both databases, so two contenders can never both win.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError

from compoundry.store.tables import Lease


class LeaseTimeout(TimeoutError):
    """The lease stayed held by someone else for longer than the caller would wait."""


class Leases:
    """Acquire, renew and release leases of one platform store; ``clock``/``sleep`` injectable for tests."""

    def __init__(self, store, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.store, self.clock, self.sleep = store, clock, sleep

    def try_acquire(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take (or renew) ``name`` for ``ttl_s`` seconds if it is free, expired or already ours."""
        now = self.clock()
        with self.store.transaction() as s:
            taken = s.execute(
                update(Lease).where(Lease.name == name, (Lease.expires_at < now) | (Lease.owner == owner))
                .values(owner=owner, expires_at=now + ttl_s))
            if taken.rowcount == 1:
                return True
        try:
            with self.store.transaction() as s:
                s.execute(insert(Lease).values(name=name, owner=owner, expires_at=now + ttl_s))
            return True
        except IntegrityError:  # the row exists and someone else holds it
            return False

    def release(self, name: str, owner: str) -> None:
        """Give ``name`` up if we still hold it (a lease that expired and was taken is not ours to free)."""
        with self.store.transaction() as s:
            s.execute(delete(Lease).where(Lease.name == name, Lease.owner == owner))

    def holder(self, name: str) -> str | None:
        """Who holds ``name`` now (expired or not), for messages."""
        with self.store.session() as s:
            row = s.get(Lease, name)
            return row.owner if row is not None else None

    @contextmanager
    def held(self, name: str, owner: str, ttl_s: float, wait_s: float, poll_s: float = 0.5,
             on_wait: Callable[[str | None], None] | None = None, renew: bool = True) -> Iterator[None]:
        """Hold ``name`` for the ``with`` block, waiting up to ``wait_s`` for it (:class:`LeaseTimeout` after).

        With ``renew`` a daemon thread renews the lease every ``ttl_s / 3`` while the block runs, so a long
        block keeps it and a dead holder loses it within ``ttl_s``. ``on_wait(holder)`` is called once when
        the lease is busy (to say who the caller waits for).
        """
        deadline = self.clock() + wait_s
        told = False
        while not self.try_acquire(name, owner, ttl_s):
            if not told and on_wait is not None:
                on_wait(self.holder(name))
                told = True
            if self.clock() >= deadline:
                raise LeaseTimeout(f"{name} is still held by {self.holder(name)} after {wait_s:.0f} s")
            self.sleep(poll_s)
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(name, owner, ttl_s, stop), daemon=True,
                                   name=f"lease-{name}") if renew else None
        if renewer is not None:
            renewer.start()
        try:
            yield
        finally:
            stop.set()
            if renewer is not None:
                renewer.join(timeout=5)
            self.release(name, owner)

    def _renew(self, name: str, owner: str, ttl_s: float, stop: threading.Event) -> None:
        while not stop.wait(ttl_s / 3):
            try:
                if not self.try_acquire(name, owner, ttl_s):
                    return  # lost it (we stalled past the TTL): the caller's own checks still hold
            except Exception:  # a database blip: try again on the next beat, within the TTL
                continue
