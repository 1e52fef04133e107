"""Building blocks shared by the config models: names, the strict base model, where configs/ is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema

#: The repository (or installed distribution) root, and the config directory used when none is given.
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_DIR = REPO_ROOT / "configs"

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")
_STEP_CHARS = _NAME_CHARS | {"_"}


def _check_name(value: str) -> str:
    if not value or not set(value) <= _NAME_CHARS or value[0] == "-":
        raise ValueError(f"name {value!r} must be lowercase letters, digits and dashes, not starting with a dash")
    return value


def _check_step_name(value: str) -> str:
    if not value or not set(value) <= _STEP_CHARS or value[0] in "-_":
        raise ValueError(f"step name {value!r} must be lowercase letters, digits, '-' or '_'")
    return value


#: Names of components, pipelines, experiments, schedules, variants (they appear in URLs and metrics).
Name = Annotated[str, AfterValidator(_check_name), WithJsonSchema({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$"})]
#: Step names appear in ``${steps.NAME...}`` templates; underscores are allowed too.
StepName = Annotated[str, AfterValidator(_check_step_name),
                     WithJsonSchema({"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"})]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
