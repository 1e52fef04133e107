"""The `local` target: replicas are `bentoml serve` processes on free ports.

Each replica runs in its own process group so it outlives the flow run that
started it and `compoundry down` can stop it with everything it spawned.
Replicas enter routing only once `/readyz` answers, i.e. the model is loaded.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from compoundry.store import DeploymentStatus, PlatformStore
from compoundry.store.capacity import CapacityStore


class ReplicaFailed(RuntimeError):
    """A replica exited or never became ready; the message carries its log tail."""


@dataclass(frozen=True)
class ReplicaHandle:
    id: str
    url: str
    pid: int
    log_path: Path


class LocalTarget:
    name = "local"

    def __init__(self, settings, store: PlatformStore):
        self.settings = settings
        self.store = store

    def start_replica(self, deployment_id: str, bento_tag: str, model_uri: str,
                      engine_options: dict | None = None, index: int | str = 0) -> ReplicaHandle:
        from bentos.build import serve_command

        replica_id = f"{deployment_id}-r{index}"
        url = self._reserve_port(replica_id, deployment_id)
        port = _port_of(url)
        log_path = self.settings.logs_dir / "replicas" / f"{replica_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = self.settings.child_env()
        env.update(COMPOUNDRY_MODEL_URI=model_uri, COMPOUNDRY_ENGINE_OPTIONS=json.dumps(engine_options or {}))
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                serve_command(bento_tag, port, self.settings.host), env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.store.set_replica_status(replica_id, DeploymentStatus.STARTING, pid=proc.pid)
        return ReplicaHandle(replica_id, url, proc.pid, log_path)

    def wait_ready(self, replica: ReplicaHandle, timeout_s: float, poll_s: float = 0.5) -> float:
        """Block until `/readyz` is 200; returns seconds waited. Raises `ReplicaFailed`."""
        started = time.monotonic()
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(replica.pid):
                raise ReplicaFailed(f"replica {replica.id} exited during start-up:\n{log_tail(replica.log_path)}")
            try:
                if httpx.get(f"{replica.url}/readyz", timeout=2).status_code == 200:
                    waited = time.monotonic() - started
                    CapacityStore(self.store).record_ready(replica.id, round(waited, 3))
                    self.store.set_replica_status(replica.id, DeploymentStatus.READY)
                    return waited
            except httpx.HTTPError:
                pass
            time.sleep(poll_s)
        raise ReplicaFailed(f"replica {replica.id} not ready after {timeout_s:.0f}s:\n{log_tail(replica.log_path)}")

    def stop_replica(self, replica_id: str, pid: int | None, grace_s: float = 10) -> None:
        """SIGTERM the replica's process group (uvicorn finishes in-flight requests), then SIGKILL."""
        if pid:
            stop_process_group(pid, grace_s)
        self.store.set_replica_status(replica_id, DeploymentStatus.STOPPED)

    def stop_deployment(self, deployment_id: str, grace_s: float = 10) -> None:
        view = self.store.deployment(deployment_id)
        if view is None:
            return
        self.store.update_deployment(deployment_id, status=DeploymentStatus.DRAINING)
        for replica in view.replicas:
            self.stop_replica(replica.id, replica.pid, grace_s)
        self.store.update_deployment(deployment_id, status=DeploymentStatus.STOPPED)

    def _reserve_port(self, replica_id: str, deployment_id: str) -> str:
        """Pick a free port and record the replica on it, atomically across flow-run processes.

        Concurrent deploys run in separate processes; without the lock two of
        them can pick the same port before either replica has bound it.
        """
        lock_path = self.settings.state_dir / "replica-ports.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                url = f"http://{self.settings.host}:{self._free_port()}"
                self.store.add_replica(replica_id, deployment_id, url, pid=None)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return url

    def _free_port(self) -> int:
        taken = {_port_of(url) for url in self.store.replica_urls_in_use()}
        start, end = self.settings.replica_ports
        for port in range(start, end + 1):
            if port not in taken and port_free(self.settings.host, port):
                return port
        raise ReplicaFailed(f"no free port in the replica range {start}-{end}")


def restore_routed_replicas(settings) -> list[str]:
    """After a restart, start again the replicas of every routed deployment.

    Routes survive in the database; their processes do not. Returns the ids of
    the replicas started.
    """
    store = PlatformStore(settings.database_url)
    store.create_schema()
    target = LocalTarget(settings, store)
    from compoundry.config.loader import load_config

    config = load_config(settings.config_dir)
    starting = []
    for view in _routed(store):
        if any(pid_alive(r.pid) for r in view.replicas if r.pid):
            continue
        for r in view.replicas:
            store.set_replica_status(r.id, DeploymentStatus.STOPPED)
        comp = config.components.get(view.component)
        if comp is None or not view.bento_tag:
            continue
        handle = target.start_replica(view.id, view.bento_tag, f"models:/{view.model_name}/{view.model_version}",
                                      comp.engine_options, index=len(view.replicas))
        starting.append((view, handle, comp.timeouts.cold_start_s))
    restored = []
    for view, handle, cold_start_s in starting:  # all load in parallel; wait for each in turn
        try:
            target.wait_ready(handle, cold_start_s)
        except ReplicaFailed as exc:
            store.update_deployment(view.id, error=f"restore failed: {exc}"[:2000])
            continue
        store.update_deployment(view.id, status=DeploymentStatus.READY)
        restored.append(handle.id)
    return restored


def _routed(store: PlatformStore):
    """Deployments serving traffic: each component's route and its experiment variants' routes."""
    return [d for d in store.deployments() if d.routed]


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def stop_process_group(pid: int, grace_s: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process of the group remains (workers outlive their leader)."""
    import psutil

    try:  # reap the leader if it is our child
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
