"""The Model Store: a narrow wrapper over MLflow's registry client.

Everything the platform asks of MLflow goes through `ModelStore`, so flows and
the control API never build MLflow requests themselves, and a fake of this
class is all a unit test needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from compoundry.core.deploy_decisions import TAG_COMPONENT, TAG_DEPLOY  # noqa: F401  (the tags it writes)

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    source: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


class ModelNotFound(LookupError):
    """The registry has no such model, version or alias."""


class ModelStore:
    def __init__(self, tracking_uri: str):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def register(self, name: str, model_uri: str, tags: dict[str, str] | None = None,
                 description: str | None = None) -> ModelVersionInfo:
        """Register a logged model as a new version, with deployment metadata as tags."""
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name)
        model_id = _logged_model_id_of(model_uri)
        run_id = _run_id_of(model_uri)
        if model_id and run_id is None:
            run_id = self.client.get_logged_model(model_id).source_run_id
        mv = self.client.create_model_version(
            name=name, source=model_uri, tags=tags or {}, description=description,
            run_id=run_id, model_id=model_id,
        )
        return self.get(name, mv.version)

    def get(self, name: str, version: str | int) -> ModelVersionInfo:
        try:
            return _info(self.client.get_model_version(name, str(version)))
        except MlflowException as exc:
            raise ModelNotFound(f"model {name!r} has no version {version}") from exc

    def by_alias(self, name: str, alias: str) -> ModelVersionInfo:
        try:
            return _info(self.client.get_model_version_by_alias(name, alias))
        except MlflowException as exc:
            raise ModelNotFound(f"model {name!r} has no alias {alias!r}") from exc

    def latest(self, name: str) -> ModelVersionInfo | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def versions(self, name: str) -> list[ModelVersionInfo]:
        try:
            found = self.client.search_model_versions(f"name = '{name}'")
        except MlflowException:
            return []
        return sorted((_info(mv) for mv in found), key=lambda v: int(v.version))

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))


def _info(mv) -> ModelVersionInfo:
    return ModelVersionInfo(
        name=mv.name, version=str(mv.version), source=mv.source, run_id=mv.run_id or None,
        tags=dict(mv.tags or {}), aliases=tuple(getattr(mv, "aliases", ()) or ()),
    )


def _logged_model_id_of(model_uri: str) -> str | None:
    """MLflow 3 logs models as `models:/m-<id>`; registering one must name that id."""
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri)
    return match.group(1) if match else None


def _run_id_of(model_uri: str) -> str | None:
    if model_uri.startswith("runs:/"):
        return model_uri.split("/")[1]
    return None
