"""API key rows in the platform database (created by the CLI, read by gateways' refresher)."""

from __future__ import annotations

from sqlalchemy import select

from compoundry.core.api_keys import SCOPES, KeyRecord, new_key
from compoundry.store.tables import ApiKey, utcnow


class ApiKeys:
    def __init__(self, store):
        self._store = store

    def create(self, tenant: str, scopes: list[str], name: str = "") -> tuple[str, str]:
        """Store a new key; returns ``(key_id, key)``. The key is not recoverable afterwards."""
        unknown = set(scopes) - set(SCOPES)
        if unknown or not scopes:
            raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(sorted(scopes)) or 'none'}")
        if not tenant.strip():
            raise ValueError("tenant must not be empty")
        key_id, key, secret_sha256 = new_key()
        with self._store.transaction() as s:
            s.add(ApiKey(id=key_id, name=name, tenant=tenant.strip(), scopes=",".join(sorted(set(scopes))),
                         secret_sha256=secret_sha256))
        return key_id, key

    def revoke(self, key_id: str) -> bool:
        with self._store.transaction() as s:
            row = s.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = utcnow()
            return True

    def active(self) -> dict[str, KeyRecord]:
        with self._store.session() as s:
            rows = s.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)))
            return {r.id: KeyRecord(r.id, r.tenant, frozenset(r.scopes.split(",")), r.secret_sha256, r.name)
                    for r in rows}

    def listing(self) -> list[dict]:
        with self._store.session() as s:
            rows = s.scalars(select(ApiKey).order_by(ApiKey.created_at))
            return [{"id": r.id, "name": r.name, "tenant": r.tenant, "scopes": r.scopes,
                     "created_at": r.created_at.isoformat(timespec="seconds"),
                     "revoked": r.revoked_at is not None} for r in rows]
