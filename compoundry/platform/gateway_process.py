"""The gateway process: ``python -m compoundry.platform.gateway_process``.

The composition root of the Prediction Service: reads the same settings and
configs as every other platform process, opens the platform database
(creating its tables if this is a fresh state dir), builds the app with the
control API and the autoscaler, and serves it with uvicorn: in this process, or
with ``gateway.workers`` > 1 (default: one per core) in that many worker
processes behind the one port, each with its own parts (one of them leads the
autoscaler, docs/scaling.md). A bad config is printed as ``file:line`` issues
and exits with status 2, before anything listens.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import shutil
import signal
import sys
from dataclasses import replace
from pathlib import Path

import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from compoundry.config.loader import ConfigError, load_config
from compoundry.config.settings import PlatformSettings
from compoundry.control.api import router as control_router
from compoundry.gateway.app import GatewayParts, create_app
from compoundry.host.processes import pid_alive
from compoundry.metering import MeteringSink
from compoundry.metering.recovery import recover_spools
from compoundry.metering.spool import Spool
from compoundry.scaling.autoscaler_factory import build_autoscaler
from compoundry.store import PlatformStore

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _configure_tracing() -> None:
    """Export the pipeline/step spans when an OTLP endpoint is configured and the exporter is installed.

    Optional by design: without ``OTEL_EXPORTER_OTLP_ENDPOINT`` the spans are no-ops and cost nothing.
    The exporter is an optional extra: asked for without it installed, this says what to install.
    """
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
    except ImportError:
        logging.getLogger(__name__).warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed, so no traces are sent: "
            "pip install opentelemetry-exporter-otlp-proto-http")
        return
    provider = TracerProvider(resource=Resource.create({"service.name": "compoundry-gateway"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def _tune_gc() -> None:
    """Fewer young-generation collections on the request path (docs/decisions/0013-gateway-hot-path.md).

    Each call allocates a few hundred short-lived objects, so the default threshold (700) runs a
    collection every couple of calls; everything imported and built at startup is frozen out of
    the collector's scans.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def build_gateway(settings, config, store):
    """The gateway process's app: the Prediction Service, the control API, and the autoscaler over the same
    route table and load board."""
    spool_dir = settings.state_dir / "metering-spool"
    recover_spools(spool_dir, store.engine)  # what a killed gateway spooled and never wrote
    sink = MeteringSink(store.engine, start=False, spool=Spool(spool_dir))
    parts = GatewayParts.build(settings, config, store, routers=(control_router,), metering_sink=sink)
    scaler = build_autoscaler(settings, store, parts.routes, parts.load, lambda: parts.config.current)
    return create_app(replace(parts, scaler=scaler), fast_path=settings.config.gateway.fast_path)


def create_app_in_worker():
    """The app of one of several gateway worker processes (uvicorn's ``factory``): each builds its own parts.

    A worker dies with its parent (``PR_SET_PDEATHSIG``): a supervisor killed with SIGKILL leaves no worker
    serving the port behind it.
    """
    _die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = PlatformSettings.load()
    store = PlatformStore(settings.database_url)
    app = build_gateway(settings, load_config(settings.config_dir), store)
    _tune_gc()
    return app


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent died before the call
            os.kill(os.getpid(), signal.SIGTERM)


def _metrics_dir(state_dir: Path) -> Path:
    """A fresh folder for this gateway's workers' metric files (a scrape sums them, gateway/metrics.py);
    the folders of gateways no longer running go, those of others on the same state folder stay."""
    root = state_dir / "prometheus"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if not old.name.isdigit() or not pid_alive(int(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    mine = root / str(os.getpid())
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir()
    return mine


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per replica call is noise, and costs time
    try:
        settings = PlatformSettings.load()
        config = load_config(settings.config_dir)
    except ConfigError as exc:
        print(f"invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    _configure_tracing()
    settings.ensure_state_dir()
    store = PlatformStore(settings.database_url)
    store.create_schema()  # once, before any worker starts
    server = {"host": settings.bind_host, "port": settings.gateway_port, "log_level": "warning",
              "access_log": False, "loop": "auto", "http": "auto"}  # "auto": uvloop and httptools when importable
    if settings.gateway_workers > 1:  # uvicorn's own supervisor: one socket, workers restarted if they die
        store.close()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir(settings.state_dir))  # workers inherit it
        uvicorn.run("compoundry.platform.gateway_process:create_app_in_worker", factory=True,
                    workers=settings.gateway_workers, **server)
        return 0
    app = build_gateway(settings, config, store)
    _tune_gc()
    try:
        uvicorn.run(app, **server)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
