"""API key rows in the platform database (created by the CLI, read by gateways' refresher)."""

from __future__ import annotations

from sqlalchemy import select

from compoundry.auth import SCOPES, KeyRecord, new_key
from compoundry.store.tables import ApiKey, utcnow


class ApiKeys:
    def __init__(self, store):
        self._session = store._session

    def create(self, tenant: str, scopes: list[str], name: str = "") -> tuple[str, str]:
        """Store a new key; returns ``(key_id, key)``. The key is not recoverable afterwards."""
        unknown = set(scopes) - set(SCOPES)
        if unknown or not scopes:
            raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(sorted(scopes)) or 'none'}")
        if not tenant.strip():
            raise ValueError("tenant must not be empty")
        key_id, key, secret_sha256 = new_key()
        with self._session.begin() as s:
            s.add(ApiKey(id=key_id, name=name, tenant=tenant.strip(), scopes=",".join(sorted(set(scopes))),
                         secret_sha256=secret_sha256))
        return key_id, key

    def revoke(self, key_id: str) -> bool:
        with self._session.begin() as s:
            row = s.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = utcnow()
            return True

    def active(self) -> dict[str, KeyRecord]:
        with self._session() as s:
            rows = s.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)))
            return {r.id: KeyRecord(r.id, r.tenant, frozenset(r.scopes.split(",")), r.secret_sha256, r.name)
                    for r in rows}

    def listing(self) -> list[dict]:
        with self._session() as s:
            rows = s.scalars(select(ApiKey).order_by(ApiKey.created_at))
            return [{"id": r.id, "name": r.name, "tenant": r.tenant, "scopes": r.scopes,
                     "created_at": r.created_at.isoformat(timespec="seconds"),
                     "revoked": r.revoked_at is not None} for r in rows]


def ensure_local_admin_key(settings, wait_s: float = 10.0) -> str:
    """`compoundry up`: make the local admin key once (tenant ``local``), keep it in the state dir.

    The CLI, the demo and tests read it from there (``settings.admin_api_key``);
    a key that was revoked or belongs to another database is replaced. Waits
    until the gateway's key ring has it, so `up` returns with a usable key.
    """
    import time

    import httpx

    from compoundry.store import PlatformStore

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
    return current
