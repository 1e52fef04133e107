"""Where the embedded platform lives: ports, state folder, URLs.

One object every process agrees on. Values come from ``configs/platform.yaml``
and may be overridden by environment variables, so tests and a second
platform on the same machine can run side by side on other ports.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from compoundry.config.base import DEFAULT_CONFIG_DIR, REPO_ROOT
from compoundry.config.loader import load_model_file
from compoundry.config.platform_config import PlatformConfig


class PlatformSettings:
    """Resolved settings: the platform.yaml values plus environment overrides."""

    def __init__(self, config: PlatformConfig, config_dir: Path):
        self.config = config
        self.config_dir = config_dir
        env = os.environ
        self.host = config.host
        state = Path(env.get("COMPOUNDRY_STATE_DIR", config.state_dir))
        self.state_dir = state if state.is_absolute() else REPO_ROOT / state
        self.mlflow_port = int(env.get("COMPOUNDRY_MLFLOW_PORT", config.ports.mlflow))
        self.prefect_port = int(env.get("COMPOUNDRY_PREFECT_PORT", config.ports.prefect))
        self.gateway_port = int(env.get("COMPOUNDRY_GATEWAY_PORT", config.ports.gateway))
        start, end = config.replica_ports.start, config.replica_ports.end
        if "COMPOUNDRY_REPLICA_PORTS" in env:
            start, end = (int(p) for p in env["COMPOUNDRY_REPLICA_PORTS"].split("-", 1))
        self.replica_ports = (start, end)
        self._database_url = env.get("COMPOUNDRY_DATABASE_URL", config.database_url)
        workers = env.get("COMPOUNDRY_GATEWAY_WORKERS") or config.gateway.workers
        self.gateway_workers = int(workers) if workers else (os.cpu_count() or 1)
        # In a multi-host deployment (docker-compose, Kubernetes) services are not on `host`:
        self.bind_host = env.get("COMPOUNDRY_BIND_HOST", self.host)
        # ...and the host name other machines reach this one's replicas at (its compose service name):
        self.advertise_host = env.get("COMPOUNDRY_ADVERTISE_HOST", self.host)
        self._mlflow_url = env.get("COMPOUNDRY_MLFLOW_URL")
        self._prefect_api_url = env.get("COMPOUNDRY_PREFECT_API_URL")
        self._gateway_url = env.get("COMPOUNDRY_GATEWAY_URL")

    @classmethod
    def load(cls, config_dir: Path | str | None = None) -> "PlatformSettings":
        directory = Path(config_dir or os.environ.get("COMPOUNDRY_CONFIG_DIR") or DEFAULT_CONFIG_DIR)
        path = directory / "platform.yaml"
        config = load_model_file(path, PlatformConfig) if path.exists() else PlatformConfig()
        return cls(config, directory)

    def ensure_state_dir(self) -> Path:
        """The state folder, made private (0700): it holds the database, keys and secrets of the platform."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        return self.state_dir

    # --- derived locations -------------------------------------------------
    @property
    def mlflow_url(self) -> str:
        return self._mlflow_url or f"http://{self.host}:{self.mlflow_port}"

    @property
    def prefect_api_url(self) -> str:
        return self._prefect_api_url or f"http://{self.host}:{self.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def gateway_url(self) -> str:
        return self._gateway_url or f"http://{self.host}:{self.gateway_port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.gateway_url}/control/webhooks/mlflow"

    @property
    def database_url(self) -> str:
        return self._database_url or f"sqlite:///{self.state_dir / 'platform.db'}"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"

    @property
    def bentoml_home(self) -> Path:
        return self.state_dir / "bentoml"

    @property
    def mlflow_dir(self) -> Path:
        return self.state_dir / "mlflow"

    @property
    def webhook_secret(self) -> str:
        """The HMAC secret shared with MLflow; made once and kept in the state dir."""
        path = self.state_dir / "webhook_secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def admin_key_file(self) -> Path:
        """Where `compoundry up` keeps the local admin API key (created once, mode 0600)."""
        return self.state_dir / "admin_api_key"

    @property
    def admin_api_key(self) -> str | None:
        """The local admin key for the CLI, the demo and tests; ``COMPOUNDRY_API_KEY`` wins."""
        if os.environ.get("COMPOUNDRY_API_KEY"):
            return os.environ["COMPOUNDRY_API_KEY"]
        path = self.admin_key_file
        return path.read_text().strip() if path.exists() else None

    def auth_headers(self) -> dict[str, str]:
        key = self.admin_api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def mlflow_fernet_key(self) -> str:
        """MLflow stores webhook secrets encrypted; the key must survive restarts."""
        path = self.state_dir / "mlflow_fernet_key"
        if not path.exists():
            from cryptography.fernet import Fernet

            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Fernet.generate_key().decode())
            path.chmod(0o600)
        return path.read_text().strip()

    def child_env(self) -> dict[str, str]:
        """Environment for every process the platform starts."""
        env = dict(os.environ)
        env.update(
            COMPOUNDRY_CONFIG_DIR=str(self.config_dir),
            COMPOUNDRY_STATE_DIR=str(self.state_dir),
            COMPOUNDRY_MLFLOW_PORT=str(self.mlflow_port),
            COMPOUNDRY_PREFECT_PORT=str(self.prefect_port),
            COMPOUNDRY_GATEWAY_PORT=str(self.gateway_port),
            COMPOUNDRY_REPLICA_PORTS=f"{self.replica_ports[0]}-{self.replica_ports[1]}",
            COMPOUNDRY_DATABASE_URL=self.database_url,
            COMPOUNDRY_MLFLOW_URL=self.mlflow_url,
            COMPOUNDRY_PREFECT_API_URL=self.prefect_api_url,
            COMPOUNDRY_GATEWAY_URL=self.gateway_url,
            MLFLOW_TRACKING_URI=self.mlflow_url,
            PREFECT_API_URL=self.prefect_api_url,
            PREFECT_HOME=str(self.prefect_home),
            BENTOML_HOME=str(self.bentoml_home),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            PYTHONUNBUFFERED="1",
        )
        return env
