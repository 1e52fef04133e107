"""`MeteringSink`: the gateway hands over records in O(1); a writer thread batches them into the DB.

Why a thread and not an asyncio task: the database drivers (sqlite3, psycopg
through a sync SQLAlchemy engine) block, and a flush run on the event loop
would stall every request for its duration. ``asyncio.to_thread`` per flush
would still need a thread, share the default executor with other work, and
tie the sink to one loop. One dedicated daemon thread per sink keeps the
writer independent of the loop (usable from sync code and tests too); the
hot path only takes an uncontended lock around a deque append.

Failure policy: a batch that fails to insert goes back to the front of the
buffer and is retried with exponential backoff. The bound ``max_pending``
covers everything not yet written (buffer + batch in flight); past it the
oldest buffered record is dropped and counted. A batch the database *refuses*
(bad data, not a dead server) is retried row by row and the refused rows are
counted as ``rejected``, so one poison record cannot stall metering.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Self

import sqlalchemy as sa
from sqlalchemy.exc import DataError, IntegrityError

from compoundry.core.costs.records import RECORD_FIELDS, MeteringRecord, to_utc
from compoundry.metering.spool import Spool
from compoundry.store.tables import metering_table


# --- pure policy -------------------------------------------------------------
def flush_due(pending: int, batch_size: int, now: float, last_flush_at: float,
              flush_interval_s: float, retry_at: float) -> str | None:
    """``"size"``, ``"interval"`` or ``None``: whichever of batch size and interval comes first."""
    if pending <= 0 or now < retry_at:
        return None
    if pending >= batch_size:
        return "size"
    if now - last_flush_at >= flush_interval_s:
        return "interval"
    return None


def backoff_s(failures: int, initial_s: float, max_s: float) -> float:
    """Delay before the next try after ``failures`` consecutive failed flushes (doubling, capped)."""
    if failures <= 0:
        return 0.0
    return min(max_s, initial_s * 2 ** min(failures - 1, 32))


@dataclass(frozen=True)
class SinkStats:
    written: int
    dropped: int
    rejected: int
    pending: int
    failures: int  # consecutive failed flushes; 0 once a flush succeeds
    last_error: str | None


class _PartialFailure(Exception):
    def __init__(self, remaining: list[tuple[MeteringRecord, int]], cause: Exception):
        super().__init__(str(cause))
        self.remaining, self.cause = remaining, cause


# --- the sink ------------------------------------------------------------------
class MeteringSink:
    """Bounded, batching, retrying writer of :class:`MeteringRecord` rows.

    ``engine`` is usually ``PlatformStore.engine`` (or a URL; the sink then owns
    and disposes its engine). ``clock``/``sleep`` are injected for tests; with
    ``start=False`` no thread runs and tests drive :meth:`maybe_flush` and
    :meth:`flush_now` themselves.
    """

    def __init__(self, engine: sa.Engine | str, *, batch_size: int = 500, flush_interval_s: float = 1.0,
                 max_pending: int = 100_000, backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 start: bool = True, spool: Spool | None = None):
        if batch_size < 1 or max_pending <= batch_size or flush_interval_s <= 0:
            raise ValueError("need batch_size >= 1, max_pending > batch_size, flush_interval_s > 0")
        self._owns_engine = isinstance(engine, str)
        self.engine = sa.create_engine(engine, pool_pre_ping=True) if isinstance(engine, str) else engine
        self.batch_size, self.flush_interval_s, self.max_pending = batch_size, flush_interval_s, max_pending
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._clock, self._sleep = clock, sleep
        self._spool = spool
        self._buf: deque[tuple[MeteringRecord, int]] = deque()  # (record, its spool segment; 0 without one)
        self._lock = threading.Lock()        # buffer + counters; held for O(1) on the hot path
        self._write_lock = threading.Lock()  # one writer at a time (thread, flush_now, close)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._inflight = 0
        self._written = self._dropped = self._rejected = self._failures = 0
        self._last_error: str | None = None
        self._closed = False
        self._last_flush_at = clock()
        self._retry_at = float("-inf")
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="metering-writer", daemon=True)
            self._thread.start()

    # --- hot path ----------------------------------------------------------------
    def record(self, rec: MeteringRecord) -> None:
        """Queue one record: O(1), never raises; with a spool, one ``write`` to it first. Past the bound the
        oldest buffered one is dropped (it stays in the spool, for the next start to recover)."""
        with self._lock:
            if self._closed:
                self._dropped += 1
                return
            segment = self._spooled(rec, getattr(rec, "delivered", True))
            self._queue([(rec, segment)])

    def hold(self, rec: MeteringRecord) -> tuple[int, int]:
        """Spool a record whose request's answer is not sent yet; :meth:`release` it once it is (or is not)."""
        with self._lock:
            if self._spool is None or self._closed:
                return 0, 0
            try:
                return self._spool.append(rec), self._spool.segment
            except OSError as exc:  # a full disk must not fail the request: the record still goes to the DB
                self._last_error = f"metering spool: {exc}"[:500]
                return 0, 0

    def release(self, held: list[tuple[MeteringRecord, tuple[int, int]]], delivered: bool) -> None:
        """Queue records :meth:`hold` spooled, saying whether their request's answer was sent."""
        with self._lock:
            entries = [(rec if delivered else replace(rec, delivered=False), segment) for rec, (_, segment) in held]
            if self._closed:
                self._dropped += len(entries)
                return
            if self._spool is not None:
                try:
                    self._spool.mark([handle for _, handle in held if handle[0]], delivered)
                except OSError as exc:
                    self._last_error = f"metering spool: {exc}"[:500]
            self._queue(entries)

    def _spooled(self, rec: MeteringRecord, delivered: bool) -> int:
        if self._spool is None:
            return 0
        try:
            self._spool.append(rec, delivered)
        except (OSError, TypeError, ValueError) as exc:  # a full disk, or not a record: the writer sorts it out
            self._last_error = f"metering spool: {exc}"[:500]
            return 0
        return self._spool.segment

    def _queue(self, entries: list[tuple[MeteringRecord, int]]) -> None:
        """Under the lock: buffer entries, dropping the oldest past the bound; wake the writer on a full batch."""
        buf = self._buf
        for entry in entries:
            if buf and len(buf) + self._inflight >= self.max_pending:
                buf.popleft()
                self._dropped += 1
            buf.append(entry)
            if len(buf) % self.batch_size == 0:
                self._wake.set()

    # --- counters --------------------------------------------------------------------
    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buf) + self._inflight

    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(self._written, self._dropped, self._rejected, len(self._buf) + self._inflight,
                             self._failures, self._last_error)

    # --- writing -----------------------------------------------------------------------
    def maybe_flush(self) -> int:
        """One tick of the writer: flush if size or interval says so and no backoff is running."""
        with self._write_lock:
            reason = flush_due(self.pending, self.batch_size, self._clock(), self._last_flush_at,
                               self.flush_interval_s, self._retry_at)
            return 0 if reason is None else self._drain(full_only=reason == "size")

    def flush_now(self, timeout_s: float | None = None) -> int:
        """Write everything pending now, ignoring interval and backoff; rows written. Never raises."""
        if not self._write_lock.acquire(timeout=-1 if timeout_s is None else max(0.0, timeout_s)):
            return 0
        try:
            return self._drain(full_only=False)
        finally:
            self._write_lock.release()

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stop taking records, flush all (retrying with backoff) within ``timeout_s``; True if none is left."""
        deadline = self._clock() + timeout_s
        with self._lock:
            self._closed = True
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, timeout_s))
        while True:
            self.flush_now(timeout_s=max(0.0, deadline - self._clock()))
            left = deadline - self._clock()
            if self.pending == 0 or left <= 0:
                break
            self._sleep(min(left, max(0.01, backoff_s(self._failures, *self._backoff))))
        if self._spool is not None:
            with self._lock:
                self._spool.close()
        if self._owns_engine:
            self.engine.dispose()
        return self.pending == 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- internals -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._idle_s())
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.maybe_flush()
            except Exception as exc:  # noqa: BLE001 - the writer must never die
                self._note_error(exc)

    def _idle_s(self) -> float:
        now = self._clock()
        if now < self._retry_at:
            return self._retry_at - now
        return max(0.005, min(self.flush_interval_s, self._last_flush_at + self.flush_interval_s - now))

    def _drain(self, full_only: bool) -> int:
        total = 0
        while True:
            with self._lock:
                n = len(self._buf)
                if n == 0 or (full_only and n < self.batch_size):
                    break
                batch = [self._buf.popleft() for _ in range(min(n, self.batch_size))]
                self._inflight = len(batch)
                if self._spool is not None:
                    self._spool.rotate()  # what comes next goes to a new segment
            try:
                total += self._insert(batch)
            except _PartialFailure as exc:
                self._requeue(exc.remaining, exc.cause)
                return total
            except Exception as exc:  # noqa: BLE001 - any failure: keep the batch, back off
                self._requeue(batch, exc)
                return total
        self._last_flush_at = self._clock()
        return total

    def _insert(self, batch: Sequence[tuple[MeteringRecord, int]]) -> int:
        pairs, bad = [], 0
        for entry in batch:
            try:
                pairs.append((entry, _row(entry[0])))
            except (AttributeError, TypeError, ValueError):
                bad += 1  # not a record at all: nothing to retry
        try:
            if pairs:
                with self.engine.begin() as conn:
                    conn.execute(metering_table.insert(), [row for _, row in pairs])  # one executemany
            ok = len(pairs)
        except (DataError, IntegrityError):
            ok, refused = self._insert_one_by_one(pairs, bad)
            bad += refused
        self._succeeded(ok, bad, [segment for _, segment in batch])
        return ok

    def _insert_one_by_one(self, pairs: list[tuple[tuple[MeteringRecord, int], dict]],
                           bad_before: int) -> tuple[int, int]:
        ok = bad = 0
        for i, (_, row) in enumerate(pairs):
            try:
                with self.engine.begin() as conn:
                    conn.execute(metering_table.insert(), [row])
                ok += 1
            except (DataError, IntegrityError):
                bad += 1
            except Exception as exc:  # server gone mid-way: keep only what is unwritten
                self._succeeded(ok, bad + bad_before, [segment for (_, segment), _ in pairs[:i]])
                raise _PartialFailure([entry for entry, _ in pairs[i:]], exc) from exc
        return ok, bad

    def _succeeded(self, ok: int, bad: int, segments: Sequence[int] = ()) -> None:
        with self._lock:
            self._inflight = 0
            self._written += ok
            self._rejected += bad
            self._failures = 0
            if self._spool is not None:
                self._spool.settle(segments)
        self._retry_at = float("-inf")

    def _requeue(self, batch: Sequence[tuple[MeteringRecord, int]], exc: Exception) -> None:
        with self._lock:
            self._inflight = 0
            self._buf.extendleft(reversed(batch))
            while len(self._buf) > self.max_pending:
                self._buf.popleft()
                self._dropped += 1
            self._failures += 1
            failures = self._failures
        self._note_error(exc)
        self._retry_at = self._clock() + backoff_s(failures, *self._backoff)

    def _note_error(self, exc: BaseException) -> None:
        with self._lock:
            self._last_error = f"{type(exc).__name__}: {exc}"[:500]


def _row(rec: MeteringRecord) -> dict:
    row = {name: getattr(rec, name) for name in RECORD_FIELDS}
    row["timestamp"] = to_utc(rec.timestamp)
    return row
