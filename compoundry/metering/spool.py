"""The metering spool: every record is in a local file before its answer leaves the gateway.

The sink batches records into the database about once a second; a gateway killed with SIGKILL lost
what its buffer held (1 of 48 answered calls in one test). So each record is first appended to this
process's spool segment (one ``write`` to an ``O_APPEND`` file: in the kernel's page cache, which
survives the process), and a line saying whether its request's answer was sent follows. The sink moves
to a fresh segment at each flush and deletes a segment once every record in it is in the database.

A live process holds an exclusive ``flock`` on its segments. Another gateway starting later takes
the lock of a dead process's segments, puts their records in the database (skipping rows already
there) and deletes them. A record whose answer line never came is stored ``delivered = False``.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import fields, replace
from datetime import datetime
from pathlib import Path

from compoundry.core.costs.records import MeteringRecord

_FIELDS = tuple(f.name for f in fields(MeteringRecord))  # scalars all: a shallow copy is the record

PREFIX = "metering-"
MAX_OPEN = 64  # finished segments kept open (and locked) while their records wait for the database


class Spool:
    """This process's spool segments in ``directory``.

    Not thread-safe: the sink calls it under its own lock. Each record is counted against the segment it
    was written to until :meth:`settle` says it is in the database; a finished segment with nothing
    outstanding is deleted.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        self._prefix = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-"
        self._number = 0
        self._seq = 0
        self._outstanding: dict[int, int] = {}
        self._finished: dict[int, tuple[Path, int]] = {}  # segment -> (path, locked descriptor)
        self._fd, self.path = self._open()

    @property
    def segment(self) -> int:
        """The number of the segment being written now."""
        return self._number

    def append(self, record: MeteringRecord, delivered: bool | None = None) -> int:
        """Write one record to the current segment; returns its number. ``delivered`` None: a :meth:`mark`
        line follows once its request's answer was sent (or not)."""
        self._seq += 1
        row = {name: getattr(record, name) for name in _FIELDS}  # asdict() deep-copies: 10x the time
        row["timestamp"] = record.timestamp.isoformat()
        entry = {"n": self._seq, "r": row} if delivered is None else {"n": self._seq, "r": row, "ok": delivered}
        self._write(entry)
        self._outstanding[self._number] = self._outstanding.get(self._number, 0) + 1
        return self._seq

    def mark(self, held: Iterable[tuple[int, int]], delivered: bool) -> None:
        """Say whether the answer of the request these ``(number, segment)`` records belong to was sent; the line
        goes to each record's own segment (still open: its record is not settled yet), so a replayer reading
        one segment finds both."""
        by_segment: dict[int, list[int]] = {}
        for number, segment in held:
            by_segment.setdefault(segment, []).append(number)
        for segment, numbers in by_segment.items():
            fd = self._fd if segment == self._number else self._finished.get(segment, (None, None))[1]
            if fd is not None:
                self._write({"d": numbers, "ok": delivered}, fd)

    def rotate(self) -> None:
        """Finish the current segment (if it holds anything) and start a new one. Past ``MAX_OPEN`` finished
        segments (the database is down: nothing settles) or when a new file cannot be made, keep writing
        the current one."""
        if not self._outstanding.get(self._number) or len(self._finished) >= MAX_OPEN:
            return
        finished = (self._number, self.path, self._fd)
        try:
            self._fd, self.path = self._open()
        except OSError:
            self._number -= 1
            return
        self._finished[finished[0]] = finished[1:]

    def settle(self, segments: Iterable[int]) -> None:
        """These records (by segment) are in the database, or refused by it: forget them."""
        for segment in segments:
            if not segment:
                continue  # a record the spool could not take (disk full)
            left = self._outstanding[segment] = self._outstanding.get(segment, 1) - 1
            if left <= 0 and segment in self._finished:
                self._delete(segment)

    def close(self) -> None:
        """Close every segment; delete those whose records are all written (the rest wait for a replayer)."""
        self._finished[self._number] = (self.path, self._fd)
        for segment in list(self._finished):
            if self._outstanding.get(segment, 0) <= 0:
                self._delete(segment)
            else:
                os.close(self._finished.pop(segment)[1])

    def _delete(self, segment: int) -> None:
        path, fd = self._finished.pop(segment)
        self._outstanding.pop(segment, None)
        path.unlink(missing_ok=True)
        os.close(fd)

    def _open(self) -> tuple[int, Path]:
        """A new segment, locked before it gets the name a replayer looks for (created under a hidden one)."""
        self._number += 1
        path = self.directory / f"{self._prefix}{self._number:06d}.jsonl"
        hidden = path.with_name("." + path.name)
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(hidden, path)
        return fd, path

    def _write(self, entry: dict, fd: int | None = None) -> None:
        os.write(self._fd if fd is None else fd, (json.dumps(entry, separators=(",", ":"), default=str) + "\n").encode())


# --- recovery (another process's segments) --------------------------------------------------------
def orphaned_segments(directory: Path) -> Iterator[tuple[Path, int]]:
    """Segments no live process holds, each with an open, locked descriptor (close it when done)."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"{PREFIX}*.jsonl")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # deleted by its owner meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live process writes it
        yield path, fd


def read_segment(path: Path) -> list[MeteringRecord]:
    """The records of a segment, each with ``delivered`` as its answer line said (no line: False).

    A torn last line (the process died mid-write) is skipped.
    """
    records: dict[int, MeteringRecord] = {}
    verdicts: dict[int, bool] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "r" in entry:
            row = entry["r"]
            row["timestamp"] = datetime.fromisoformat(row["timestamp"])
            records[entry["n"]] = MeteringRecord(**row)
            if "ok" in entry:
                verdicts[entry["n"]] = bool(entry["ok"])
        elif "d" in entry:
            verdicts.update((n, bool(entry["ok"])) for n in entry["d"])
    return [replace(r, delivered=r.delivered and verdicts.get(n, False)) for n, r in records.items()]
