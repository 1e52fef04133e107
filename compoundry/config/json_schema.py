"""JSON Schemas of the config files, generated from the pydantic models.

Editors (the YAML language server in VS Code, JetBrains, Neovim) use them for
completion and inline errors via a ``# yaml-language-server: $schema=...`` line;
the copies in ``configs/schema/`` are regenerated with ``compoundry config schema``
and a unit test fails when they drift from the models.
"""

from __future__ import annotations

import json
from pathlib import Path

from compoundry.config.models import FILE_MODELS

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schemas() -> dict[str, dict]:
    """One JSON Schema per config file, keyed by file stem (platform, components, ...)."""
    out = {}
    for stem, (model, _) in FILE_MODELS.items():
        schema = model.model_json_schema()
        out[stem] = {"$schema": SCHEMA_DIALECT, "title": f"compoundry {stem}.yaml", **
                     {k: v for k, v in schema.items() if k != "title"}}
    return out


def render(schema: dict) -> str:
    """The exact text written to a ``.schema.json`` file (stable, for the drift test)."""
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def write_schemas(out_dir: Path) -> list[Path]:
    """Write ``<stem>.schema.json`` for every config file into ``out_dir``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, schema in json_schemas().items():
        path = out_dir / f"{stem}.schema.json"
        path.write_text(render(schema), encoding="utf-8")
        paths.append(path)
    return paths
