"""A test-only node agent: runs the real Bento for every Deployment the fake API server holds.

It plays the kubelet, the Deployment controller and the endpoints controller as far as the kubernetes
target needs, so the deploy flow's rollout, the gateway's route and the pipeline's answer are real:
for each apps/v1 Deployment it starts one ``bentoml serve`` of the locally built Bento of the
Deployment's engine (``compoundry.io/engine``) with the container's inline env (``COMPOUNDRY_MODEL_URI``)
and MLflow resolved to the test's server (the ConfigMap reference a kubelet would read). When
``/readyz`` answers it writes a Running Pod, the Deployment's status (observed, updated, available) and
the Service's Endpoints (``127.0.0.1:<port>``: what ``kubernetes.route_to: pods`` routes to). A deleted
Deployment's process gets SIGTERM; its Pod and Endpoints go. One pod per Deployment, images ignored.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass

import httpx

from bentos.build import serve_command
from compoundry.host.processes import stop_process_group
from tests.integration.fake_kube_api import FakeKubeAPI
from tests.integration.stub_backend import free_port

APPS, CORE = "apis/apps/v1", "api/v1"


@dataclass
class Pod:
    name: str
    namespace: str
    port: int
    process: subprocess.Popen
    ready: bool = False


class NodeAgent:
    def __init__(self, api: FakeKubeAPI, settings, bentos: dict[str, str], poll_s: float = 0.2):
        """``bentos``: engine -> the Bento tag to serve (built into ``settings.bentoml_home``)."""
        self.api, self.settings, self.bentos, self.poll_s = api, settings, bentos, poll_s
        self.pods: dict[str, Pod] = {}  # Deployment name -> its one pod
        self.started: list[str] = []  # Deployment names, in the order their pods started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-agent", daemon=True)

    def __enter__(self) -> "NodeAgent":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        for pod in self.pods.values():
            stop_process_group(pod.process.pid, 5)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._reconcile()
            except Exception as exc:  # noqa: BLE001 - keep reconciling; a test sees the effect
                print(f"node agent: {exc!r}")

    def _reconcile(self) -> None:
        wanted = {key[3]: obj for key, obj in list(self.api.objects.items())
                  if key[0] == APPS and key[2] == "deployments"}
        for name, deployment in wanted.items():
            pod = self.pods.get(name) or self._start(name, deployment)
            if not pod.ready and self._answers(pod):
                pod.ready = True
                self._publish(pod, deployment)
            if pod.ready and deployment.get("status", {}).get("observedGeneration") != \
                    deployment["metadata"]["generation"]:
                self._publish(pod, deployment)  # a new generation (a patched floor) observed: still one pod
        for name in set(self.pods) - set(wanted):
            pod = self.pods.pop(name)
            stop_process_group(pod.process.pid, 10)
            self.api.drop(CORE, pod.namespace, "pods", f"{name}-pod")
            self.api.drop(CORE, pod.namespace, "endpoints", name)

    def _start(self, name: str, deployment: dict) -> Pod:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        engine = deployment["spec"]["template"]["metadata"]["labels"]["compoundry.io/engine"]
        env = self.settings.child_env()
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        port = free_port()
        log = open(self.settings.logs_dir / f"node-agent-{name}.log", "ab")
        process = subprocess.Popen(serve_command(self.bentos[engine], port, "127.0.0.1"), env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        pod = self.pods[name] = Pod(name, deployment["metadata"]["namespace"], port, process)
        self.started.append(name)
        return pod

    @staticmethod
    def _answers(pod: Pod) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{pod.port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _publish(self, pod: Pod, deployment: dict) -> None:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        self.api.seed(CORE, pod.namespace, "pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{pod.name}-pod", "namespace": pod.namespace, "labels": labels},
            "status": {"phase": "Running", "podIP": "127.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True"}]}})
        self.api.seed(CORE, pod.namespace, "endpoints", {
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": pod.name, "namespace": pod.namespace},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "http", "port": pod.port}]}]})
        self.api.set_status(APPS, pod.namespace, "deployments", pod.name, {
            "observedGeneration": deployment["metadata"]["generation"], "replicas": 1, "updatedReplicas": 1,
            "readyReplicas": 1, "availableReplicas": 1})


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
