"""Processes and ports on this machine: the one place that signals, reaps and probes them.

The supervisor (``compoundry up/down``) and the local replica target both
start long-lived processes in their own process group; both stop them with
:func:`stop_process_group`, tell a live process from a dead one or a zombie
with :func:`process_identity` / :func:`pid_alive`, and read a failed start's
log with :func:`log_tail`.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import httpx
import psutil

STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 30
_POLL_S = 0.2


def process_identity(pid: int | None) -> tuple[list[str], float] | None:
    """``(cmdline, start time)`` of a live, non-zombie process, or None."""
    if not pid:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.cmdline(), proc.create_time()
    except psutil.AccessDenied:
        return [], 0.0  # alive, but not ours to inspect
    except psutil.Error:
        return None


def pid_alive(pid: int | None) -> bool:
    """True while ``pid`` runs and is not a zombie."""
    return process_identity(pid) is not None


def process_age_s(pid: int | None) -> float:
    """Seconds since the process started; 0 when it is gone."""
    identity = process_identity(pid)
    return time.time() - identity[1] if identity and identity[1] else 0.0


def group_members(pgid: int) -> list[psutil.Process]:
    """The live (non-zombie) processes of a process group."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def stop_process_group(pid: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the group led by ``pid`` (or the pid alone if it leads none), wait, then SIGKILL what is left.

    Descendants that left the group (a worker that called ``setsid``) are
    killed too, so nothing the process started outlives it.
    """
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    leads_group = _pgid(pid) == pid
    _signal(pid, signal.SIGTERM, leads_group)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _still_running(pid, leads_group):
        time.sleep(_POLL_S)
    if _still_running(pid, leads_group):
        _signal(pid, signal.SIGKILL, leads_group)
    for proc in descendants:
        try:
            proc.kill()
        except psutil.Error:
            pass
    reap(pid)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        os.killpg(pid, sig) if group else os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _still_running(pid: int, group: bool) -> bool:
    reap(pid)
    return bool(group_members(pid)) if group else pid_alive(pid)


def reap(pid: int) -> None:
    """Collect the exit status if we are the parent, so no zombie stays behind."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def platform_processes(state_dir: Path, marker: str) -> list[psutil.Process]:
    """Live processes started for the platform whose state is ``state_dir`` (every process it starts carries
    ``COMPOUNDRY_STATE_DIR``) with ``marker`` in their command line; never this process or another platform's."""
    wanted, found = str(state_dir), []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if not any(marker in part for part in proc.info["cmdline"] or ()):
                continue
            if proc.environ().get("COMPOUNDRY_STATE_DIR") == wanted:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def orphans(processes: list[psutil.Process], parent_marker: str) -> list[psutil.Process]:
    """Those whose parent is gone: adopted by init (or a subreaper) instead of a process with ``parent_marker``
    in its command line (a Bento worker whose ``bentoml serve`` died)."""
    found = []
    for proc in processes:
        try:
            parent = proc.parent()
            if parent is None or parent.pid == 1 or not any(parent_marker in part for part in parent.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def kill_all(processes: list[psutil.Process], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM each, wait up to ``grace_s`` for all of them, then SIGKILL what is left."""
    for proc in processes:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(processes, timeout=grace_s)
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass


def port_free(host: str, port: int) -> bool:
    """True when nothing is bound to ``host:port`` (a replica may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_taken(url: str | None) -> bool:
    """True when something accepts connections at the URL's host and port."""
    if not url:
        return False
    parsed = httpx.URL(url)
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((parsed.host, parsed.port or 80)) == 0


def log_tail(path: Path, offset: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` written after ``offset`` (one run's output)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"
