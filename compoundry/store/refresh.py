"""In-memory copies of database state, refreshed in the background: routes, keys, experiment runs.

The gateway's request path reads only these copies, never the database
(docs/decisions/0004-gateway-route-cache.md): a slow or dead database must not
add latency to, or fail, a prediction. A refresh that fails keeps the last
known state and logs a warning once per outage. The autoscaler reads the same
route table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from compoundry.core.routing.route_view import RouteView

log = logging.getLogger(__name__)


def propagation_s(refresh_s: float) -> float:
    """How long until every gateway has read a route change: two refresh intervals (one may have just
    started before the change) plus a margin for the read itself."""
    return 2 * refresh_s + 0.5


class RouteTable:
    """``component -> RouteView`` with ready replicas, swapped atomically on each refresh."""

    def __init__(self, load: Callable[[], dict[str, RouteView]], refresh_s: float = 0.5,
                 retry_after_s: float = 1.0):
        self._load = load
        self.refresh_s = refresh_s
        self.retry_after_s = retry_after_s
        self._routes: dict[str, RouteView] = {}
        self._task: Periodic | None = None
        self.loaded = False
        self.last_ok: float | None = None  # time.time() of the last successful refresh
        self.last_error: str | None = None

    @property
    def routes(self) -> dict[str, RouteView]:
        return self._routes

    # --- refresh -------------------------------------------------------------
    async def refresh(self) -> bool:
        """Re-read the routes in a worker thread; on failure keep the last known ones."""
        try:
            routes = await asyncio.to_thread(self._load)
        except Exception as exc:  # the database is down, locked, corrupt...
            if self.last_error is None:
                log.warning("route refresh failed, serving the last known routes: %s", _short(exc))
            self.last_error = _short(exc)
            return False
        if self.last_error is not None:
            log.info("route refresh recovered")
        self._routes = routes
        self.loaded = True
        self.last_ok = time.time()
        self.last_error = None
        return True

    async def start(self) -> None:
        """First load (so the gateway is ready at once when the DB is up), then refresh forever."""
        await self.refresh()
        self._task = Periodic("route-refresher", self.refresh, self.refresh_s).start()

    async def stop(self) -> None:
        if self._task is not None:
            await self._task.stop()
            self._task = None

    def describe(self) -> dict[str, dict]:
        """The table for ``GET /v1/routes``: each component's serving route and its experiment variants'."""
        return {name: {**_describe(r), "variants": {v.variant: _describe(v) for v in r.variants}}
                for name, r in sorted(self._routes.items())}


def _describe(r: RouteView) -> dict:
    return {"deployment": r.deployment_id, "model_name": r.model_name, "model_version": r.model_version,
            "engine": r.engine, "replicas": [rep.url for rep in r.replicas]}


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"


class Refresher:
    """Reload something small from the database in the background (e.g. API keys), keeping the last good copy."""

    def __init__(self, what: str, load: Callable[[], object], apply: Callable[[object], None], every_s: float):
        self.what, self._load, self._apply, self.every_s = what, load, apply, every_s
        self._task: Periodic | None = None
        self.last_error: str | None = None

    async def refresh(self) -> bool:
        try:
            value = await asyncio.to_thread(self._load)
        except Exception as exc:
            if self.last_error is None:
                log.warning("%s refresh failed, keeping the last known: %s", self.what, _short(exc))
            self.last_error = _short(exc)
            return False
        self._apply(value)
        self.last_error = None
        return True

    async def start(self) -> None:
        await self.refresh()
        self._task = Periodic(f"{self.what}-refresher", self.refresh, self.every_s).start()

    async def stop(self) -> None:
        if self._task is not None:
            await self._task.stop()
            self._task = None


class Periodic:
    """Run ``step()`` every ``every_s`` seconds on the event loop until stopped (the gateway's background work)."""

    def __init__(self, name: str, step: Callable[[], Awaitable[object]], every_s: float):
        self.name, self.step, self.every_s = name, step, every_s
        self._task: asyncio.Task | None = None

    def start(self) -> "Periodic":
        self._task = asyncio.create_task(self._loop(), name=self.name)
        return self

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            await self.step()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
