"""A model with a known load time and service time, for scaling tests and the cold-start benchmark.

Real models load in seconds to minutes and answer in milliseconds to seconds;
this one makes both explicit (``load_s`` at log time, ``delay_ms`` per row), so
a test can tell a cold start from a slow answer and a benchmark can build the
study's dependency chain (30 s + 150 s) at a scale that fits CI. It runs in a
real ``bentoml serve`` replica like every other pyfunc model.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel

from compoundry.registry.demo_models import _reqs, _run


class Sleeper(PythonModel):
    """Rows ``{"delay_ms": int, "text": str}`` -> ``{"echo": text, "pid": <replica pid>}`` after the delay
    (plus the version's own ``extra_delay_ms``: a slower challenger for experiment tests)."""

    def load_context(self, context):
        import time

        config = context.model_config or {}
        self.extra_delay_ms = float(config.get("extra_delay_ms", 0))
        time.sleep(float(config.get("load_s", 0)))

    def predict(self, context, model_input, params=None):
        import os
        import time

        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        rows = [r if isinstance(r, dict) else {"text": r} for r in rows]
        delay_ms = max((float(r.get("delay_ms") or 0) for r in rows), default=0.0)
        delay_ms += getattr(self, "extra_delay_ms", 0.0)
        time.sleep(delay_ms / 1000)
        return [{"echo": str(r.get("text", "")), "pid": os.getpid()} for r in rows]


def log_sleeper(load_s: float = 0.0, name: str = "sleeper", extra_delay_ms: float = 0.0,
                eval_rows: list[dict] | None = None) -> str:
    """Log a Sleeper that takes ``load_s`` seconds to load; returns its model URI.

    ``eval_rows`` are logged with the run as ``eval/data.csv`` (an evaluation dataset for the deploy gate).
    """
    with _run(name):
        if eval_rows is not None:
            import csv
            import tempfile
            from pathlib import Path

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "data.csv"
                with open(path, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=list(eval_rows[0]))
                    writer.writeheader()
                    writer.writerows(eval_rows)
                mlflow.log_artifact(str(path), artifact_path="eval")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Sleeper(), model_config={"load_s": load_s, "extra_delay_ms": extra_delay_ms},
            input_example=[{"delay_ms": 10, "text": "hello"}], pip_requirements=_reqs(),
        )
    return info.model_uri


def _register_by_value() -> None:
    """Pickle Sleeper by value, so the replica loads it without this repository on ``sys.path``."""
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


_register_by_value()
