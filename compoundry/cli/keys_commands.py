"""`compoundry keys create|list|revoke`: API keys for the Prediction Service."""

from __future__ import annotations

import json

import typer

from compoundry.cli.common import console, err_console, fail, load_settings, open_store
from compoundry.cli.listing import print_rows
from compoundry.store.api_key_store import ApiKeys

keys_app = typer.Typer(help="API keys for the Prediction Service (stored hashed; shown once).", no_args_is_help=True)


def _keys() -> ApiKeys:
    return ApiKeys(open_store(load_settings()))


@keys_app.command()
def create(
    tenant: str = typer.Option(..., help="Who the calls are billed to (metering attribution)."),
    scope: list[str] = typer.Option(["invoke"], help="invoke (predictions), admin (control API, metrics) and/or metrics (only /metrics, for a scraper); repeatable."),
    name: str = typer.Option("", help="A note to recognise the key by."),
) -> None:
    """Create a key and print it once; only its hash is stored."""
    try:
        key_id, key = _keys().create(tenant, scope, name)
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(2)
    console.print(f"key [bold]{key_id}[/] for tenant {tenant} ({', '.join(sorted(set(scope)))}):")
    print(key)
    console.print("[dim]store it now: it cannot be shown again. Send it as `Authorization: Bearer <key>`.[/]")


@keys_app.command("list")
def list_keys(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List keys (ids, tenants, scopes; never the keys themselves)."""
    rows = _keys().listing()
    if as_json:
        console.print_json(json.dumps(rows))
        return
    print_rows(console, ("id", "tenant", "scopes", "name", "created", "revoked"),
               [(r["id"], r["tenant"], r["scopes"], r["name"], r["created_at"], "yes" if r["revoked"] else "")
                for r in rows])


@keys_app.command()
def revoke(key_id: str = typer.Argument(..., help="The key's id (the part after `ck_`).")) -> None:
    """Revoke a key; gateways refuse it within a refresh interval."""
    if not _keys().revoke(key_id):
        fail(f"no active key {key_id!r}")
    console.print(f"revoked {key_id}")
