"""The `local` target: replicas are `bentoml serve` processes on free ports of this machine.

A replica binds on ``bind_host`` and is registered as ``http://<advertise_host>:<port>``
(both default to ``host``; in docker-compose, the service name of the container that started it).

Each replica runs in its own process group so it outlives the flow run that
started it and `compoundry down` can stop it with everything it spawned. A
new replica enters routing only once its `/readyz` answers (the store marks
it READY; gateways route READY replicas only). A replica to remove is first
marked DRAINING, so gateways stop sending it requests at their next route
refresh; ``drain(url, timeout_s)`` then waits for its in-flight requests, and
only then is it stopped (SIGTERM, which BentoML's server answers by finishing
what it has). A replica whose process died is marked FAILED (out of routing,
its lifetime ended), whatever it left of its process group is killed, and a
ready one is reported by ``lost`` once, so the autoscaler replaces it at its
next tick instead of waiting for load to ask.
"""

from __future__ import annotations

import fcntl
import json
import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from bentos.build import serve_command
from compoundry.config.loader import load_config
from compoundry.host.processes import (
    group_members,
    log_tail,
    pid_alive,
    port_free,
    reap,
    stop_process_group,
)
from compoundry.scaling.targets.protocol import ReplicaFailed, Rollout, ScalingSpec
from compoundry.store import DeploymentStatus, PlatformStore
from compoundry.store.capacity import CapacityStore, ReplicaRow
from compoundry.store.tables import Deployment

log = logging.getLogger(__name__)
STOP_GRACE_S = 30.0


@dataclass(frozen=True)
class ReplicaHandle:
    id: str
    url: str
    pid: int
    log_path: Path


@dataclass(frozen=True)
class Launch:
    """One replica to start: which deployment, which Bento, which model, how long it may take."""

    deployment_id: str
    bento_tag: str
    model_uri: str
    engine_options: dict
    cold_start_s: float
    index: int | str


@dataclass(frozen=True)
class Started:
    """A launched replica: ready after ``ready_s`` seconds, or failed (then stopped) with ``error``."""

    launch: Launch
    handle: ReplicaHandle | None
    ready_s: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def choose_to_stop(replicas: list[ReplicaRow], count: int) -> list[ReplicaRow]:
    """Which replicas to remove: those still starting first (they serve nobody), then the newest ready."""
    starting = [r for r in replicas if r.status == DeploymentStatus.STARTING.value]
    ready = sorted((r for r in replicas if r.status != DeploymentStatus.STARTING.value),
                   key=lambda r: r.id, reverse=True)  # the deploy flow's first replica (-r0) goes last
    return (starting + ready)[:max(0, count)]


class LocalTarget:
    name = "local"

    def __init__(self, settings, store: PlatformStore, drain: Callable[[str, float], None] | None = None):
        """``drain(url, timeout_s)`` waits until no request is in flight on a replica about to stop."""
        self.settings = settings
        self.store = store
        self.capacity = CapacityStore(store)
        self.drain = drain or (lambda url, timeout_s: None)
        self._lock = threading.Lock()
        self._dead: set[str] = set()  # replica ids already found dead (``live`` runs in several threads)
        self._lost: dict[str, int] = {}  # deployment -> ready replicas found dead, not yet taken by ``lost``

    # --- the ScalerTarget protocol ---------------------------------------------------------
    def apply(self, spec: ScalingSpec) -> None:
        """Nothing to render locally: the deploy flow built the Bento; replicas come from set_replicas."""

    def replicas(self, deployment_id: str) -> int:
        return len(self.live(deployment_id))

    def lost(self, deployment_id: str) -> int:
        with self._lock:
            return self._lost.pop(deployment_id, 0)

    def set_replicas(self, spec: ScalingSpec, replicas: int) -> int:
        """Converge to ``replicas`` live replicas; blocks until new ones are ready or removed ones drained.

        Returns the live count afterwards (lower than asked when a replica failed to start).
        """
        live = self.live(spec.deployment_id)
        if replicas > len(live):
            launches = [Launch(spec.deployment_id, spec.image, spec.model_uri, spec.engine_options,
                               spec.cold_start_s, uuid.uuid4().hex[:6]) for _ in range(replicas - len(live))]
            for failed in (s for s in self.start_all(launches) if not s.ok):
                log.error("replica of %s failed to start: %s", spec.deployment_id, failed.error.splitlines()[0])
        elif replicas < len(live):
            self._remove(choose_to_stop(live, len(live) - replicas), spec.cold_start_s)
        return len(self.live(spec.deployment_id))

    def remove(self, deployment_id: str) -> None:
        self.stop_deployment(deployment_id, grace_s=STOP_GRACE_S)

    # --- the ReplicaTarget protocol (the deploy flow) ----------------------------------------
    def deploy(self, spec: ScalingSpec, replicas: int) -> Rollout:
        """Start ``replicas`` replicas of the Bento ``spec.image`` in parallel; all ready, or none left running."""
        launches = [Launch(spec.deployment_id, spec.image, spec.model_uri, spec.engine_options, spec.cold_start_s, i)
                    for i in range(max(1, replicas))]
        started = self.start_all(launches)
        failed = [s for s in started if not s.ok]
        if failed:
            for ok in (s for s in started if s.ok):
                self.stop_replica(ok.handle.id, ok.handle.pid, grace_s=2)
            raise ReplicaFailed(failed[0].error)
        return Rollout(tuple(s.handle.url for s in started), max(s.ready_s for s in started), self.name)

    def drain_and_delete(self, deployment_id: str, grace_s: float) -> None:
        """SIGTERM each replica (BentoML finishes what it has), SIGKILL after ``grace_s``."""
        self.stop_deployment(deployment_id, grace_s=grace_s)

    def where(self, deployment_id: str) -> str:
        return f"local ({len(self.live(deployment_id))} process(es))"

    # --- starting ------------------------------------------------------------------------------
    def start_all(self, launches: list[Launch]) -> list[Started]:
        """Start every replica at once, then wait until each is ready, all in parallel.

        A replica that exits or is not ready within its cold-start limit is
        stopped and marked FAILED; the caller decides what a failure means.
        """
        handles = [self.start_replica(launch) for launch in launches]
        with ThreadPoolExecutor(max_workers=max(1, len(handles))) as pool:
            return list(pool.map(self._await_ready, launches, handles))

    def start_replica(self, launch: Launch) -> ReplicaHandle:
        replica_id = f"{launch.deployment_id}-r{launch.index}"
        url = self._reserve_port(replica_id, launch.deployment_id)
        log_path = self.settings.logs_dir / "replicas" / f"{replica_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = self.settings.child_env()
        env.update(COMPOUNDRY_MODEL_URI=launch.model_uri,
                   COMPOUNDRY_ENGINE_OPTIONS=json.dumps(launch.engine_options or {}))
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                serve_command(launch.bento_tag, _port_of(url), self.settings.bind_host), env=env, stdout=out,
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
                    self.capacity.record_ready(replica.id, round(waited, 3))
                    self.store.set_replica_status(replica.id, DeploymentStatus.READY)
                    return waited
            except httpx.HTTPError:
                pass
            time.sleep(poll_s)
        raise ReplicaFailed(f"replica {replica.id} not ready after {timeout_s:.0f}s:\n{log_tail(replica.log_path)}")

    def _await_ready(self, launch: Launch, handle: ReplicaHandle) -> Started:
        try:
            return Started(launch, handle, ready_s=self.wait_ready(handle, launch.cold_start_s))
        except ReplicaFailed as exc:
            stop_process_group(handle.pid, grace_s=2)
            self.store.set_replica_status(handle.id, DeploymentStatus.FAILED)
            return Started(launch, handle, error=str(exc))

    # --- stopping ------------------------------------------------------------------------------
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

    def _remove(self, rows: list[ReplicaRow], drain_timeout_s: float) -> None:
        for row in rows:  # out of routing first, all of them, then drain each
            self.store.set_replica_status(row.id, DeploymentStatus.DRAINING)
        for row in rows:
            if row.status == DeploymentStatus.READY.value:
                self.drain(row.url, drain_timeout_s)
            # drained: the process may take its time to exit, but the deployment can scale again now
            threading.Thread(target=self.stop_replica, args=(row.id, row.pid, STOP_GRACE_S),
                             name=f"stop-{row.id}", daemon=True).start()

    # --- state -----------------------------------------------------------------------------------
    def live(self, deployment_id: str) -> list[ReplicaRow]:
        """Starting and ready replicas whose process is alive; dead ones are marked FAILED on the way."""
        rows = self.capacity.live_replicas([deployment_id]).get(deployment_id, [])
        alive = []
        for row in rows:
            if row.pid is not None and not pid_alive(row.pid):
                self._bury(row)
                continue
            alive.append(row)
        return alive

    def _bury(self, row: ReplicaRow) -> None:
        """A replica whose process is gone: out of routing, leftovers of its group killed, counted once if it
        was serving (one that dies while starting is the start-up's failure, reported by ``start_all``)."""
        with self._lock:
            first = row.id not in self._dead
            self._dead.add(row.id)
            if first and row.status == DeploymentStatus.READY.value:
                self._lost[row.deployment_id] = self._lost.get(row.deployment_id, 0) + 1
        if not first:
            return
        log.warning("replica %s (pid %s) died; marking it failed", row.id, row.pid)
        self.store.set_replica_status(row.id, DeploymentStatus.FAILED)
        reap(row.pid)  # our child: no zombie stays behind
        for orphan in group_members(row.pid):  # workers that outlived their server still hold memory
            try:
                orphan.kill()
            except psutil.Error:
                pass

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
                # bound on bind_host, registered under advertise_host: the name gateways on other hosts resolve
                url = f"http://{self.settings.advertise_host}:{self._free_port()}"
                self.store.add_replica(replica_id, deployment_id, url, pid=None)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return url

    def _free_port(self) -> int:
        taken = {_port_of(url) for url in self.store.replica_urls_in_use()}
        start, end = self.settings.replica_ports
        for port in range(start, end + 1):
            if port not in taken and port_free(self.settings.bind_host, port):
                return port
        raise ReplicaFailed(f"no free port in the replica range {start}-{end}")


def restore_routed_replicas(settings) -> list[str]:
    """After a restart, start again one replica of every routed local deployment whose processes are gone.

    Routes survive in the database; their processes do not. Kubernetes and BentoCloud deployments never
    stopped (``compoundry down`` leaves them), so they are not touched. Returns the ids of the replicas
    that came back.
    """
    store = PlatformStore(settings.database_url)
    store.create_schema()
    target = LocalTarget(settings, store)
    config = load_config(settings.config_dir)
    launches = []
    with store.session() as s:  # remote deployments keep running while the platform is down: not ours to start
        remote = {row.id for row in s.query(Deployment).filter(Deployment.target != "local")}
    for view in (d for d in store.deployments() if d.routed and d.id not in remote):  # serving and variant routes
        if any(pid_alive(r.pid) for r in view.replicas if r.pid):
            continue
        for r in view.replicas:
            store.set_replica_status(r.id, DeploymentStatus.STOPPED)
        comp = config.components.get(view.component)
        if comp is None or not view.bento_tag:
            continue
        launches.append(Launch(view.id, view.bento_tag, f"models:/{view.model_name}/{view.model_version}",
                               comp.engine_options, comp.timeouts.cold_start_s, len(view.replicas)))
    restored = []
    for started in target.start_all(launches):
        deployment_id = started.launch.deployment_id
        if started.ok:
            store.update_deployment(deployment_id, status=DeploymentStatus.READY)
            restored.append(started.handle.id)
        else:
            store.update_deployment(deployment_id, error=f"restore failed: {started.error}"[:2000])
    return restored


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])
