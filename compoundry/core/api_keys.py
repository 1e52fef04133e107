"""API keys: format, hashing and the in-memory key ring the request path checks.

A key is ``ck_<id>_<secret>``: ``id`` is public (it names the key in listings
and logs), ``secret`` is 32 random url-safe bytes. Only ``sha256(secret)`` is
stored. A slow password hash (bcrypt, argon2) guards low-entropy passwords;
a 256-bit random secret cannot be brute-forced, and a fast hash keeps the
check off the latency budget (docs/decisions/0011-api-keys.md).

The gateway never reads the database on a request: ``KeyRing`` is refreshed in
the background with the routes, and a revoked key stops working within one
refresh interval.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCOPES = ("invoke", "admin", "metrics")  # metrics: read /metrics and nothing else (admin may too)
PREFIX = "ck"


@dataclass(frozen=True)
class KeyRecord:
    id: str
    tenant: str
    scopes: frozenset[str]
    secret_sha256: str
    name: str = ""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key id and tenant (for attribution) and what it may do."""

    key_id: str
    tenant: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        """Whether this key may use a route that needs ``scope`` (an admin key may also read metrics)."""
        return scope in self.scopes or (scope == "metrics" and "admin" in self.scopes)


def new_key() -> tuple[str, str, str]:
    """A fresh key: ``(key_id, full key to hand out once, sha256 of its secret to store)``."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{PREFIX}_{key_id}_{secret}", digest(secret)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(key: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None."""
    parts = key.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class KeyRing:
    """The keys the gateway accepts, swapped whole on each refresh."""

    def __init__(self, records: dict[str, KeyRecord] | None = None):
        self._records = records or {}

    def replace(self, records: dict[str, KeyRecord]) -> None:
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    def authenticate(self, key: str | None) -> Principal | None:
        """The key's principal, or None for a missing, malformed, unknown, revoked or wrong key."""
        parsed = parse(key) if key else None
        if parsed is None:
            return None
        record = self._records.get(parsed[0])
        if record is None or not hmac.compare_digest(record.secret_sha256, digest(parsed[1])):
            return None
        return Principal(record.id, record.tenant, record.scopes)


def bearer_token(authorization: str | None, api_key_header: str | None) -> str | None:
    """The key from ``Authorization: Bearer <key>`` (what the OpenAI client sends) or ``X-Api-Key``."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return api_key_header.strip() if api_key_header else None
