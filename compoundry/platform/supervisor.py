"""Start, stop and inspect the embedded platform's processes (`compoundry up/down/status`).

Each service runs in its own process group (so stopping it stops the workers
it forked), logs to ``<state>/logs/<name>.log`` and leaves its pid in
``<state>/pids/<name>.pid``. A pid file is trusted only while its process is
alive, not a zombie, started no later than the file was written, and still
runs the expected command, so a reused pid is never signalled.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from compoundry.core.dag import ancestors, topological_levels
from compoundry.host.processes import (
    kill_all,
    log_tail,
    orphans,
    platform_processes,
    port_taken,
    process_identity,
    reap,
    stop_process_group,
)
from compoundry.platform.post_start import POST_START_HOOKS, PostStartHook
from compoundry.platform.services import ServiceSpec, platform_services
from compoundry.scaling.targets.target_choice import remote_deployments
from compoundry.store import DeploymentStatus, PlatformStore

#: progress(name, event, detail); events: running, starting, healthy, failed, stale, stopping, stopped,
#: hook-ok, hook-skipped, hook-failed, warning.
Progress = Callable[[str, str, str], None]
#: In the command line of every replica process: `bentoml serve ...` and its `_bentoml_impl` workers.
REPLICA_MARKER = "bentoml"
WORKER_MARKER = "_bentoml_impl"  # a replica's worker processes; their parent is the replica's `bentoml serve`
PID_START_SLACK_S = 2.0


class PlatformError(RuntimeError):
    """An expected failure (a service did not start, a port is taken): the CLI prints it, no traceback."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    alive: bool
    healthy: bool
    url: str | None


def _quiet(*_args) -> None:
    pass


# --- pure decisions (unit-tested) ---------------------------------------------
def start_levels(specs: Mapping[str, ServiceSpec], only: Iterable[str] | None = None) -> list[list[str]]:
    """Services to start, grouped into levels that start in parallel; `only` pulls in its dependencies."""
    deps = {name: spec.depends_on for name, spec in specs.items()}
    if only is None:
        wanted = set(deps)
    else:
        unknown = sorted(set(only) - set(deps))
        if unknown:
            raise PlatformError(f"unknown service(s) {unknown}; choose from {sorted(deps)}")
        wanted = set(only).union(*(ancestors(deps, n) for n in only))
    levels = topological_levels({n: d for n, d in deps.items() if n in wanted})
    return [level for level in levels if level]


def cmdline_matches(expected: Sequence[str], cmdline: Sequence[str]) -> bool:
    """True when the first tokens of the command we started appear in the process's cmdline.

    A console script (`.venv/bin/mlflow server`) runs as `python .venv/bin/mlflow server`,
    so tokens are looked up anywhere in the cmdline, executables also by basename.
    """
    names = {os.path.basename(tok) for tok in cmdline}
    for i, token in enumerate(expected[:3]):
        if token in cmdline:
            continue
        if i == 0 and (os.path.basename(token) in names or _same_python(token, cmdline)):
            continue
        return False
    return True


def _same_python(token: str, cmdline: Sequence[str]) -> bool:
    base = os.path.basename(token)
    return base.startswith("python") and any(os.path.basename(t).startswith("python") for t in cmdline[:1])


def pid_is_stale(expected: Sequence[str], cmdline: Sequence[str] | None, started_at: float | None,
                 pidfile_written_at: float | None) -> bool:
    """A pid file is stale when its process is gone, runs something else, or started after the file was written."""
    if cmdline is None or started_at is None:
        return True
    if not cmdline_matches(expected, cmdline):
        return True
    if pidfile_written_at is not None and started_at > pidfile_written_at + PID_START_SLACK_S:
        return True  # the pid was reused by a later process
    return False


class Supervisor:
    """Brings the platform's services up in dependency order and down again; see module docstring."""

    def __init__(self, settings, specs: Mapping[str, ServiceSpec] | None = None,
                 hooks: Sequence[PostStartHook] = POST_START_HOOKS):
        self.settings = settings
        self.specs = dict(specs) if specs is not None else platform_services(settings)
        self.hooks = tuple(hooks)
        self.timings: dict[str, float] = {}  # seconds from spawn to healthy, this run

    # --- public --------------------------------------------------------------------
    def up(self, only: Iterable[str] | None = None, progress: Progress = _quiet) -> None:
        """Start what is not running, level by level; raise `PlatformError` with log tails on failure."""
        levels = start_levels(self.specs, only)
        self.settings.ensure_state_dir()
        for directory in (self.settings.logs_dir, self.settings.pids_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._stop_orphans(progress)
        self._check_ports([self.specs[n] for level in levels for n in level], progress)
        for level in levels:
            self._run_parallel(level, lambda name: self._bring_up(self.specs[name], progress))
        self._run_hooks({n for level in levels for n in level}, progress)

    def down(self, progress: Progress = _quiet) -> None:
        """Stop every service (dependents first) and the Bento replicas recorded in the platform DB."""
        levels = start_levels(self.specs)
        for level in reversed(levels[1:]):
            self._run_parallel(level, lambda name: self._stop(self.specs[name], progress))
        self._stop_replicas(progress)
        self._stop_strays(progress)
        if levels:
            self._run_parallel(levels[0], lambda name: self._stop(self.specs[name], progress))

    def status(self) -> list[ServiceStatus]:
        result = []
        for spec in self.specs.values():
            pid = self.running_pid(spec)
            healthy = pid is not None and spec.is_healthy(pid)
            result.append(ServiceStatus(spec.name, pid, pid is not None, healthy, spec.url))
        return result

    def pid_file(self, name: str) -> Path:
        return self.settings.pids_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.settings.logs_dir / f"{name}.log"

    def running_pid(self, spec: ServiceSpec, progress: Progress = _quiet) -> int | None:
        """The pid of this service's live process, removing a stale pid file on the way."""
        path = self.pid_file(spec.name)
        try:
            pid = int(path.read_text().strip())
            written_at = path.stat().st_mtime
        except (OSError, ValueError):
            if path.exists():
                path.unlink(missing_ok=True)
            return None
        identity = process_identity(pid)
        cmdline, started_at = identity if identity else (None, None)
        if pid_is_stale(spec.argv, cmdline, started_at, written_at):
            path.unlink(missing_ok=True)
            progress(spec.name, "stale", f"removed stale pid file (pid {pid})")
            return None
        return pid

    # --- start -----------------------------------------------------------------------
    def _bring_up(self, spec: ServiceSpec, progress: Progress) -> None:
        pid = self.running_pid(spec, progress)
        if pid is not None:
            progress(spec.name, "running", f"pid {pid}")
            self._wait_healthy(spec, pid, offset=None, progress=progress)
            return
        progress(spec.name, "starting", "")
        started = time.monotonic()
        pid, offset = self._spawn(spec)
        self._wait_healthy(spec, pid, offset, progress)
        self.timings[spec.name] = time.monotonic() - started
        progress(spec.name, "healthy", f"{self.timings[spec.name]:.1f}s")

    def _check_ports(self, specs: Sequence[ServiceSpec], progress: Progress) -> None:
        """Fail before starting anything if a port we need answers but no service of ours runs there."""
        taken = [spec for spec in specs if spec.health_url and self.running_pid(spec, progress) is None
                 and port_taken(spec.health_url)]
        if taken:
            lines = [f"{s.name}: port {httpx.URL(s.health_url).port} is in use by a process compoundry did not "
                     f"start; stop it or set COMPOUNDRY_{s.name.upper()}_PORT" for s in taken]
            raise PlatformError("\n".join(lines))

    def _spawn(self, spec: ServiceSpec) -> tuple[int, int]:
        """Start the service in a new session (own process group); returns (pid, log offset)."""
        log_path = self.log_file(spec.name)
        with open(log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(spec.argv)}\n".encode())
            log.flush()
            offset = log.tell()
            proc = subprocess.Popen(
                spec.argv, env=spec.start_env(), cwd=spec.cwd, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.pid_file(spec.name).write_text(f"{proc.pid}\n")
        return proc.pid, offset

    def _wait_healthy(self, spec: ServiceSpec, pid: int, offset: int | None, progress: Progress) -> None:
        deadline = time.monotonic() + spec.start_timeout_s
        while time.monotonic() < deadline:
            if process_identity(pid) is None:
                reap(pid)
                self.pid_file(spec.name).unlink(missing_ok=True)
                self._fail(spec, "exited during start-up", offset, progress)
            if spec.is_healthy(pid):
                return
            time.sleep(0.25)
        stop_process_group(pid)
        self.pid_file(spec.name).unlink(missing_ok=True)
        self._fail(spec, f"not healthy after {spec.start_timeout_s:.0f}s (stopped it)", offset, progress)

    def _fail(self, spec: ServiceSpec, reason: str, offset: int | None, progress: Progress) -> None:
        progress(spec.name, "failed", reason)
        log_path = self.log_file(spec.name)
        tail = log_tail(log_path, offset or 0)
        raise PlatformError(f"{spec.name} {reason}. Last lines of {log_path}:\n{tail}")

    @staticmethod
    def _run_parallel(names: Sequence[str], action: Callable[[str], None]) -> None:
        """Run `action` for each name concurrently; re-raise the failures together."""
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            futures = [pool.submit(action, name) for name in names]
        errors = [f.exception() for f in futures if f.exception() is not None]
        for err in errors:
            if not isinstance(err, PlatformError):
                raise err
        if errors:
            raise PlatformError("\n\n".join(str(e) for e in errors))

    # --- post-start hooks ------------------------------------------------------------------
    def _run_hooks(self, selected: set[str], progress: Progress) -> None:
        """Call each hook whose services are part of this `up`, in order; errors are collected and raised together."""
        failures = []
        for hook in self.hooks:
            if not set(hook.needs) <= selected:
                continue
            if hook.enabled is not None and not hook.enabled(self.settings):
                progress(hook.title, "hook-skipped", "disabled in platform.yaml")
                continue
            try:
                result = hook.run(self.settings)
            except Exception as exc:  # noqa: BLE001 - reported to the person, with its type
                failures.append(f"{hook.title} failed: {type(exc).__name__}: {exc}")
                progress(hook.title, "hook-failed", f"{type(exc).__name__}: {exc}")
                continue
            progress(hook.title, "hook-ok", _describe(result))
        if failures:
            raise PlatformError("services are up, but post-start steps failed:\n" + "\n".join(failures))

    # --- stop ------------------------------------------------------------------------------
    def _stop(self, spec: ServiceSpec, progress: Progress) -> None:
        pid = self.running_pid(spec, progress)
        if pid is None:
            self.pid_file(spec.name).unlink(missing_ok=True)
            return
        progress(spec.name, "stopping", f"pid {pid}")
        stop_process_group(pid)
        self.pid_file(spec.name).unlink(missing_ok=True)
        progress(spec.name, "stopped", "")

    def _stop_replicas(self, progress: Progress) -> None:
        """Replicas are started by flows, not by us; the platform DB records their pids. Kubernetes and
        BentoCloud deployments keep running (and routed) while the platform is down."""
        store = self._open_store(progress)
        if store is None:
            return

        def stop(replica) -> None:
            progress(f"replica {replica.id}", "stopping", f"pid {replica.pid}")
            stop_process_group(replica.pid)
            progress(f"replica {replica.id}", "stopped", "")

        try:
            remote = remote_deployments(store)  # not ours to stop: `compoundry down --delete-remote` deletes them
            replicas = [r for d in store.deployments() if d.id not in remote for r in d.replicas]
            running = [r for r in replicas if r.pid and _is_replica(r.pid)]
            if running:  # in parallel: each may take its full grace period to drain
                with ThreadPoolExecutor(max_workers=min(8, len(running))) as pool:
                    list(pool.map(stop, running))
            for replica in replicas:
                store.set_replica_status(replica.id, DeploymentStatus.STOPPED)
        except Exception as exc:  # noqa: BLE001 - a broken DB must not keep the servers running
            progress("replicas", "warning", f"could not read replicas from the platform DB: {exc}")
        finally:
            store.close()

    def _stop_strays(self, progress: Progress) -> None:
        """After the recorded replicas: any Bento process of this platform still running (a worker whose
        `bentoml serve` was killed, a replica the database lost track of). Another platform's are left alone."""
        strays = platform_processes(self.settings.state_dir, REPLICA_MARKER)
        if strays:
            progress("replicas", "warning", f"stopping {len(strays)} stray replica process(es): "
                                            f"{', '.join(str(p.pid) for p in strays)}")
            kill_all(strays)

    def _stop_orphans(self, progress: Progress) -> None:
        """Before starting: Bento workers of this platform whose `bentoml serve` died hold ports and memory.
        A `bentoml serve` itself outlives the flow run that started it by design, and is kept."""
        found = orphans(platform_processes(self.settings.state_dir, WORKER_MARKER), REPLICA_MARKER)
        if found:
            progress("replicas", "warning", f"stopping {len(found)} orphaned replica process(es): "
                                            f"{', '.join(str(p.pid) for p in found)}")
            kill_all(found)

    def _open_store(self, progress: Progress):
        url = self.settings.database_url
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            return None  # nothing was ever deployed; do not create an empty DB
        try:
            return PlatformStore(url)
        except Exception as exc:  # noqa: BLE001
            progress("replicas", "warning", f"platform DB unavailable ({exc}); replicas not stopped")
            return None


def _is_replica(pid: int) -> bool:
    """Only signal a recorded pid that still runs a Bento (pids are reused)."""
    identity = process_identity(pid)
    return identity is not None and any(REPLICA_MARKER in tok for tok in identity[0])


def _describe(result) -> str:
    if result is None:
        return "done"
    if isinstance(result, (list, tuple, set)):
        return f"{len(result)} item(s)" if result else "nothing to do"
    return str(result)
