"""What `compoundry up` does once the services are healthy: each step names the services it needs.

Every step is a plain function of the settings, referenced directly (a broken
import fails loudly at start-up, it never silently skips a step).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from compoundry.config.settings import PlatformSettings
from compoundry.registry.webhooks import ensure_mlflow_webhook
from compoundry.scaling.targets.local import restore_routed_replicas
from compoundry.store import PlatformStore
from compoundry.store.api_key_store import ApiKeys


@dataclass(frozen=True)
class PostStartHook:
    """A step run once the services it ``needs`` are healthy; ``enabled`` may switch it off by settings."""

    run: Callable[[PlatformSettings], object] = field(compare=False)
    needs: tuple[str, ...]
    title: str
    enabled: Callable[[PlatformSettings], bool] | None = field(default=None, compare=False)


def ensure_local_admin_key(settings, wait_s: float = 10.0) -> str:
    """`compoundry up`: make the local admin key once (tenant ``local``), keep it in the state dir (0600).

    The CLI, the demo and tests read it from there (``settings.admin_api_key``);
    a key that was revoked or belongs to another database is replaced. Waits
    until the gateway's key ring has it, so `up` returns with a usable key.
    Returns where the key is, never the key: `up` prints it, and terminals are logged.
    """
    store = PlatformStore(settings.database_url)
    store.create_schema()
    keys = ApiKeys(store)
    path = settings.admin_key_file
    current = path.read_text().strip() if path.exists() else ""
    current_id = current.split("_")[1] if current.count("_") >= 2 else None
    if current_id not in keys.active():
        _, key = keys.create("local", ["invoke", "admin"], name="local admin (compoundry up)")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(key)
        path.chmod(0o600)
        current = key
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            ok = httpx.get(f"{settings.gateway_url}/v1/models", headers={"Authorization": f"Bearer {current}"},
                           timeout=2).status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            break
        time.sleep(0.1)
    store.close()
    return f"key {current.split('_')[1]} in {path}"


#: Called by `up` once every service a hook needs is healthy, in this order.
POST_START_HOOKS: tuple[PostStartHook, ...] = (
    PostStartHook(ensure_local_admin_key, ("gateway",), "local admin API key"),
    PostStartHook(ensure_mlflow_webhook, ("mlflow", "gateway"), "MLflow webhook",
                  enabled=lambda settings: settings.config.registry.webhooks),  # off: the registry-poll flow deploys
    PostStartHook(restore_routed_replicas, ("mlflow", "gateway"), "restore routed replicas"),
)
