"""A fake Kubernetes API server for the kubernetes target's apply path.

It serves the REST paths the official client calls for namespaced objects
(``/api/v1/...`` and ``/apis/<group>/<version>/...``, built-in kinds and CRDs
alike) from dicts, with the behaviour the target relies on: 201 on create, 409
``AlreadyExists`` on a second create, 404 ``NotFound`` Status objects,
``resourceVersion`` conflicts on replace, merge-patch (and a 400 for a JSON
patch that is not a list, the client's default content type for dict bodies),
server-side apply (below), equality label selectors on lists, cluster IPs that
a replace may not change.
Every request is recorded; ``fail_next`` makes the next matching request fail
with a given Status (403, 422...).

Server-side apply, simplified: ownership is tracked per field manager as the
set of leaf paths it applied (lists are atomic leaves, where the real server
merges associative lists such as containers by key). An apply creates a missing
object, removes fields its manager applied before but no longer sends (unless
another manager owns them too), keeps everyone else's fields (the HPA's
``replicas``), answers 409 for a field another manager owns with a different
value unless ``force=true``, and changes nothing (no new resourceVersion) when
the result is the same. ``fieldManager`` is required, as on a real server.

What it does not do: admission (defaulting, validation webhooks such as
Knative's), controllers (no pods appear, no HPA acts), watches,
strategic-merge list semantics. See docs/decisions/0015 and 0038.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.integration.stub_backend import free_port

PATH = re.compile(r"^/(api/v1|apis/[^/]+/[^/]+)/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?$")
KINDS = {"deployments": "Deployment", "services": "Service", "horizontalpodautoscalers": "HorizontalPodAutoscaler",
         "poddisruptionbudgets": "PodDisruptionBudget", "pods": "Pod", "endpoints": "Endpoints"}
APPLY = "application/apply-patch+yaml"
IDENTITY = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}


@dataclass
class Recorded:
    method: str
    path: str
    content_type: str
    body: object
    query: str = ""


@dataclass
class Fault:
    method: str
    plural: str
    status: int
    reason: str
    message: str


def status(code: int, reason: str, message: str, name: str = "", kind: str = "") -> JSONResponse:
    """A ``Status`` object shaped like the real API server's error bodies."""
    return JSONResponse({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "message": message, "reason": reason, "details": {"name": name, "kind": kind},
                         "code": code}, status_code=code)


def leaves(obj: object, prefix: tuple = ()) -> dict[tuple, object]:
    """Every leaf path of ``obj`` with its value; lists and empty dicts are leaves."""
    if isinstance(obj, dict) and obj:
        out = {}
        for key, value in obj.items():
            out.update(leaves(value, (*prefix, key)))
        return out
    return {prefix: obj}


def drop_path(obj: dict, path: tuple) -> None:
    """Remove ``path`` from ``obj``, and parents it leaves empty."""
    parent = obj
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
        if parent is None:
            return
    if isinstance(parent, dict):
        parent.pop(path[-1], None)
        if len(path) > 1 and not parent:
            drop_path(obj, path[:-1])


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class FakeKubeAPI:
    """Objects keyed by (api prefix, namespace, plural, name); run it with :meth:`start`."""

    def __init__(self):
        self.objects: dict[tuple[str, str, str, str], dict] = {}
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.owners: dict[tuple, dict[str, set[tuple]]] = {}  # object key -> field manager -> leaf paths
        self._versions = itertools.count(1)
        self._ips = itertools.count(10)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = FastAPI()
        self.app.add_api_route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self._thread = threading.Thread(target=self.server.run, name="fake-kube-api", daemon=True)

    # test helpers ------------------------------------------------------------------------------------------

    def start(self, timeout_s: float = 10) -> "FakeKubeAPI":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"fake API server did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=5)

    def get(self, prefix: str, namespace: str, plural: str, name: str) -> dict | None:
        return self.objects.get((prefix, namespace, plural, name))

    def names(self, prefix: str, plural: str) -> list[str]:
        return sorted(key[3] for key in self.objects if key[0] == prefix and key[2] == plural)

    def seed(self, prefix: str, namespace: str, plural: str, obj: dict) -> None:
        """Put an object in place as a controller would (e.g. pods of a Deployment)."""
        self.objects[(prefix, namespace, plural, obj["metadata"]["name"])] = self._stamp(copy.deepcopy(obj))

    def controller_patch(self, prefix: str, namespace: str, plural: str, name: str, patch: dict,
                         manager: str = "kube-controller-manager") -> None:
        """Change an object as another controller would (the HPA setting replicas), owning what it set."""
        key = (prefix, namespace, plural, name)
        self.objects[key] = self._stamp(merge_patch(self.objects[key], patch))
        self.owners.setdefault(key, {}).setdefault(manager, set()).update(leaves(patch))

    def set_status(self, prefix: str, namespace: str, plural: str, name: str, status: dict) -> None:
        """Write an object's status as its controller does (the status subresource: no new generation)."""
        obj = self.objects[(prefix, namespace, plural, name)]
        obj["status"] = copy.deepcopy(status)
        obj["metadata"]["resourceVersion"] = str(next(self._versions))

    def drop(self, prefix: str, namespace: str, plural: str, name: str) -> None:
        """Remove an object as its controller would (a pod gone, an Endpoints object emptied)."""
        self.objects.pop((prefix, namespace, plural, name), None)
        self.owners.pop((prefix, namespace, plural, name), None)

    def fail_next(self, method: str, plural: str, code: int, reason: str, message: str) -> None:
        self.faults.append(Fault(method, plural, code, reason, message))

    def calls(self, method: str | None = None, plural: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method)
                and (plural is None or PATH.match(r.path) and PATH.match(r.path).group(3) == plural)]

    # the API -----------------------------------------------------------------------------------------------

    async def _handle(self, path: str, request: Request):
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        body = json.loads(raw) if raw else None
        self.requests.append(Recorded(request.method, "/" + path, content_type, body, request.url.query))
        match = PATH.match("/" + path)
        if match is None:
            return status(404, "NotFound", f"the server could not find the requested resource ({path})")
        prefix, namespace, plural, name = match.groups()
        kind = (body or {}).get("kind") or KINDS.get(plural, plural)
        for fault in self.faults:
            if fault.method == request.method and fault.plural == plural:
                self.faults.remove(fault)
                return status(fault.status, fault.reason, fault.message, name or "", kind)
        key = (prefix, namespace, plural, name)
        if name is None:
            if request.method == "GET":
                return self._list(prefix, namespace, plural, request.query_params.get("labelSelector", ""))
            if request.method == "POST":
                return self._create(key, namespace, plural, body)
            return status(405, "MethodNotAllowed", f"{request.method} on a collection")
        if request.method == "PATCH" and content_type.startswith(APPLY):
            return self._apply(key, body, request.query_params)
        if key not in self.objects:
            return status(404, "NotFound", f'{plural} "{name}" not found', name, kind)
        if request.method == "GET":
            return JSONResponse(self.objects[key])
        if request.method == "PUT":
            return self._replace(key, body)
        if request.method == "PATCH":
            return self._patch(key, content_type, body)
        gone = self.objects.pop(key)
        self.owners.pop(key, None)
        return JSONResponse({"kind": "Status", "apiVersion": "v1", "status": "Success",
                             "details": {"name": name, "kind": plural, "uid": gone["metadata"]["uid"]}})

    def _stamp(self, obj: dict) -> dict:
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._versions))
        meta.setdefault("uid", f"uid-{meta['resourceVersion']}")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        meta["generation"] = meta.get("generation", 0) + 1
        return obj

    def _list(self, prefix: str, namespace: str, plural: str, selector: str) -> JSONResponse:
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        items = [obj for (p, ns, pl, _), obj in sorted(self.objects.items())
                 if (p, ns, pl) == (prefix, namespace, plural)
                 and wanted.items() <= (obj["metadata"].get("labels") or {}).items()]
        return JSONResponse({"kind": f"{KINDS.get(plural, plural)}List", "apiVersion": "v1",
                             "metadata": {"resourceVersion": str(next(self._versions))}, "items": items})

    def _create(self, key: tuple, namespace: str, plural: str, body: dict) -> JSONResponse:
        name = body.get("metadata", {}).get("name", "")
        key = (*key[:3], name)
        if body["metadata"].get("namespace", namespace) != namespace:
            return status(400, "BadRequest", "the namespace of the object does not match the request", name)
        if key in self.objects:
            return status(409, "AlreadyExists", f'{plural} "{name}" already exists', name, body["kind"])
        if body["metadata"].get("resourceVersion"):
            return status(500, "InternalError", "resourceVersion should not be set on objects to be created", name)
        obj = copy.deepcopy(body)
        obj["metadata"]["namespace"] = namespace
        if plural == "services" and key[0] == "api/v1":
            ip = f"10.96.0.{next(self._ips)}"
            obj["spec"].update(clusterIP=ip, clusterIPs=[ip])
        self.objects[key] = self._stamp(obj)
        return JSONResponse(self.objects[key], status_code=201)

    def _replace(self, key: tuple, body: dict) -> JSONResponse:
        live, name = self.objects[key], key[3]
        if body["metadata"].get("name") != name:
            return status(400, "BadRequest", "the name of the object does not match the name on the URL", name)
        version = body["metadata"].get("resourceVersion")
        if version and version != live["metadata"]["resourceVersion"]:
            return status(409, "Conflict", f'Operation cannot be fulfilled on {key[2]} "{name}": the object has '
                                           "been modified; please apply your changes to the latest version", name)
        obj = copy.deepcopy(body)
        if key[2] == "services" and key[0] == "api/v1":  # the registry keeps allocated IPs a replace leaves out
            ip = obj["spec"].setdefault("clusterIP", live["spec"]["clusterIP"])
            if ip != live["spec"]["clusterIP"]:
                return status(422, "Invalid", f'Service "{name}" is invalid: spec.clusterIPs[0]: Invalid value: '
                                              f'"{ip}": field is immutable', name, "Service")
            obj["spec"].setdefault("clusterIPs", live["spec"]["clusterIPs"])
        obj["metadata"].update(uid=live["metadata"]["uid"], namespace=key[1],
                               creationTimestamp=live["metadata"]["creationTimestamp"],
                               generation=live["metadata"]["generation"])
        if "status" in live:
            obj["status"] = live["status"]
        self.objects[key] = self._stamp(obj)
        return JSONResponse(self.objects[key])

    def _patch(self, key: tuple, content_type: str, body: object) -> JSONResponse:
        name = key[3]
        if content_type.startswith("application/json-patch+json"):
            if not isinstance(body, list):
                return status(400, "BadRequest", "json: cannot unmarshal object into Go value of type "
                                                 "[]handlers.jsonPatchOp", name)
            return status(415, "UnsupportedMediaType", "the fake API server does not implement JSON patch", name)
        if not content_type.startswith(("application/merge-patch+json", "application/strategic-merge-patch+json")):
            return status(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                       f"accepted media types include: application/merge-patch+json "
                                                       f"(got {content_type})", name)
        self.objects[key] = self._stamp(merge_patch(self.objects[key], body))
        return JSONResponse(self.objects[key])

    def _apply(self, key: tuple, body: dict, params) -> JSONResponse:
        name, manager, force = key[3], params.get("fieldManager"), params.get("force", "").lower() in ("true", "1")  # Go ParseBool: True too
        if not manager:
            return status(400, "BadRequest", "PATCH requests of type apply require a fieldManager", name)
        if body.get("metadata", {}).get("name") != name:
            return status(400, "BadRequest", "the name of the object does not match the name on the URL", name)
        applied = {p: v for p, v in leaves(body).items() if p not in IDENTITY}
        live = self.objects.get(key)
        owners = self.owners.setdefault(key, {})
        if live is None:
            created = self._create(key[:3] + (None,), key[1], key[2], copy.deepcopy(body))
            owners[manager] = set(applied)
            return created
        live_leaves = leaves(live)
        conflicts = sorted({(other, p) for other, paths in owners.items() if other != manager
                            for p in paths & set(applied) if live_leaves.get(p) != applied[p]})
        if conflicts and not force:
            listed = ", ".join(f'conflict with "{m}": .{".".join(p)}' for m, p in conflicts)
            return status(409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s): {listed}", name)
        for other, path in conflicts:
            owners[other].discard(path)
        obj = copy.deepcopy(live)
        shared = set().union(*(paths for other, paths in owners.items() if other != manager))
        for path in owners.get(manager, set()) - set(applied) - shared:
            drop_path(obj, path)
        obj = merge_patch(obj, body)
        owners[manager] = set(applied)
        if obj == live:
            return JSONResponse(live)
        obj["metadata"]["generation"] = live["metadata"]["generation"] + (obj.get("spec") != live.get("spec"))
        obj["metadata"]["generation"] -= 1  # _stamp adds one
        self.objects[key] = self._stamp(obj)
        return JSONResponse(self.objects[key])
