"""Helpers shared by every compoundry Bento (copied into each Bento by `bentos/build.py`).

A Bento does not pack its model: a replica loads it at start-up from the MLflow
model URI in `COMPOUNDRY_MODEL_URI` (see docs/decisions/0003-bento-protocol.md),
so one built Bento per engine serves any registered version.
"""

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

logger = logging.getLogger("compoundry.bento")

MODEL_URI_ENV = "COMPOUNDRY_MODEL_URI"
ENGINE_OPTIONS_ENV = "COMPOUNDRY_ENGINE_OPTIONS"


def model_uri() -> str:
    uri = os.environ.get(MODEL_URI_ENV, "").strip()
    if not uri:
        raise RuntimeError(f"{MODEL_URI_ENV} is not set: a compoundry Bento loads its model from an MLflow URI")
    return uri


def engine_options() -> dict[str, Any]:
    """`COMPOUNDRY_ENGINE_OPTIONS` as a dict (free-form, from components.yaml)."""
    raw = os.environ.get(ENGINE_OPTIONS_ENV, "").strip()
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise RuntimeError(f"{ENGINE_OPTIONS_ENV} must be a JSON object, got {type(value).__name__}")
    return value


def configure_mlflow() -> None:
    """Use `MLFLOW_TRACKING_URI` from the environment (MLflow reads it too; set it explicitly for clarity)."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI", uri))


@dataclass
class ServiceInfo:
    """What `/info` reports; filled in by `timed_load`."""

    engine: str
    model_uri: str = ""
    model_load_s: float | None = None
    ready: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "model_uri": self.model_uri, "model_load_s": self.model_load_s,
                "ready": self.ready, **self.extra}


def timed_load(info: ServiceInfo, load: Callable[[str], Any]) -> Any:
    """Load the model from `COMPOUNDRY_MODEL_URI` with `load(uri)`, recording the duration in `info`."""
    configure_mlflow()
    info.model_uri = model_uri()
    started = time.perf_counter()
    try:
        model = load(info.model_uri)
    except Exception:
        logger.exception("could not load %s (engine %s)", info.model_uri, info.engine)
        stop_server_on_load_error()
        raise
    info.model_load_s = round(time.perf_counter() - started, 3)
    info.ready = True
    logger.info("loaded %s in %.2fs (engine %s)", info.model_uri, info.model_load_s, info.engine)
    return model


def stop_server_on_load_error() -> None:
    """Make `bentoml serve` exit instead of respawning the worker forever (BentoML 1.4 retries a failed
    `__init__` every ~10 s and floods the log): a replica whose model cannot load fails fast, and its
    process supervisor (local target, Kubernetes) sees the exit. Opt out: COMPOUNDRY_EXIT_ON_LOAD_ERROR=0."""
    if os.environ.get("COMPOUNDRY_EXIT_ON_LOAD_ERROR", "1") == "0":
        return
    import signal

    parent = os.getppid()
    if parent > 1:
        os.kill(parent, signal.SIGTERM)


def to_jsonable(value: Any) -> Any:
    """Plain JSON from model outputs: numpy arrays/scalars, pandas DataFrames (records)/Series, NaN → None."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None:
        if isinstance(value, pd.DataFrame):
            return [to_jsonable(r) for r in value.to_dict(orient="records")]
        if isinstance(value, pd.Series):
            return [to_jsonable(v) for v in value.tolist()]
        if value is pd.NaT:
            return None
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
    if np is not None:
        if isinstance(value, np.ndarray):
            return to_jsonable(value.tolist())
        if isinstance(value, np.generic):
            return to_jsonable(value.item())
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def require(inputs: dict, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """Fetch `inputs[key]` or raise BentoML's InvalidArgument (HTTP 400) with a clear message."""
    from bentoml.exceptions import InvalidArgument

    if key not in inputs:
        raise InvalidArgument(f"inputs.{key} is required ({what})")
    value = inputs[key]
    if not isinstance(value, kind):
        raise InvalidArgument(f"inputs.{key} must be {what}, got {type(value).__name__}")
    return value


def bad_request(exc: Exception):
    """`{"error": ...}` with HTTP 400. BentoML 1.4.39 renders InvalidArgument as a one-element *list*
    (`[{"error": ...}]`, a stray tuple comma in `api_endpoint_wrapper`), so services return this instead."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": str(exc), "type": "invalid_argument"}, status_code=400)


def model_error(exc: Exception):
    """HTTP 500 that names the model's error (BentoML's own 500 body hides it), so pipelines can report it."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": f"{type(exc).__name__}: {exc}", "type": "model_error"}, status_code=500)
