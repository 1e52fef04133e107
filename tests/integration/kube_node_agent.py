"""A test-only node agent: runs the real Bento for every Deployment the fake API server holds.

It plays the kubelet, the Deployment controller and the endpoints controller as far as the kubernetes
target needs, so the deploy flow's rollout, the gateway's route and the pipeline's answer are real:
for each apps/v1 Deployment it starts one ``bentoml serve`` of the locally built Bento of the
Deployment's engine (``compoundry.io/engine``) with the container's inline env (``COMPOUNDRY_MODEL_URI``)
and MLflow resolved to the test's server (the ConfigMap reference a kubelet would read). When
``/readyz`` answers it writes a Running Pod, the Deployment's status (observed, updated, available) and
the Service's Endpoints (``127.0.0.1:<port>``: what ``kubernetes.route_to: pods`` routes to). A deleted
Deployment's process gets SIGTERM; its Pod and Endpoints go. One pod per Deployment, images ignored.
A Knative Service gets an activator (tests/integration/kube_activator.py) as its address, Ready at once:
its pod starts on the first request and stops after the idle window, as Knative scales to zero.
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
from tests.integration.kube_activator import Activator
from tests.integration.stub_backend import free_port

APPS, CORE, KNATIVE = "apis/apps/v1", "api/v1", "apis/serving.knative.dev/v1"


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
        self.activators: dict[str, Activator] = {}  # Knative Service name -> its activator
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-agent", daemon=True)

    def __enter__(self) -> "NodeAgent":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        for activator in self.activators.values():
            activator.close()
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
        self._reconcile_knative()
        for name in set(self.pods) - set(wanted):
            pod = self.pods.pop(name)
            stop_process_group(pod.process.pid, 10)
            self.api.drop(CORE, pod.namespace, "pods", f"{name}-pod")
            self.api.drop(CORE, pod.namespace, "endpoints", name)

    def _reconcile_knative(self) -> None:
        services = {key[3]: obj for key, obj in list(self.api.objects.items())
                    if key[0] == KNATIVE and key[2] == "services"}
        for name, service in services.items():
            activator = self.activators.get(name)
            if activator is None:
                activator = self.activators[name] = self._activator(name, service)
                self.api.set_status(KNATIVE, service["metadata"]["namespace"], "services", name, {
                    "observedGeneration": service["metadata"]["generation"], "url": activator.url,
                    "address": {"url": activator.url}, "latestReadyRevisionName": f"{name}-00001",
                    "conditions": [{"type": "Ready", "status": "True"}]})
            activator.configure(service["spec"]["template"]["metadata"].get("annotations", {}))
            activator.tick()
        for name in set(self.activators) - set(services):
            self.activators.pop(name).close()

    def _activator(self, name: str, service: dict) -> Activator:
        namespace, labels = service["metadata"]["namespace"], service["spec"]["template"]["metadata"]["labels"]

        def start() -> Pod:
            pod = self._launch(name, service)
            self.api.seed(CORE, namespace, "pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{name}-pod", "namespace": namespace, "labels": labels},
                "status": {"phase": "Running", "podIP": "127.0.0.1"}})
            return pod

        def stop(pod: Pod) -> None:
            stop_process_group(pod.process.pid, 10)
            self.api.drop(CORE, namespace, "pods", f"{name}-pod")

        return Activator(start, stop, self._answers, lambda pod: f"http://127.0.0.1:{pod.port}")

    def _start(self, name: str, deployment: dict) -> Pod:
        pod = self.pods[name] = self._launch(name, deployment)
        self.started.append(name)
        return pod

    def _launch(self, name: str, deployment: dict) -> Pod:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        engine = deployment["spec"]["template"]["metadata"]["labels"]["compoundry.io/engine"]
        env = self.settings.child_env()
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        port = free_port()
        log = open(self.settings.logs_dir / f"node-agent-{name}.log", "ab")
        process = subprocess.Popen(serve_command(self.bentos[engine], port, "127.0.0.1"), env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return Pod(name, deployment["metadata"]["namespace"], port, process)

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
