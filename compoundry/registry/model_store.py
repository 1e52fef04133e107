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
from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

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
        source, run_id, model_id = self.resolve(model_uri)
        mv = self.client.create_model_version(
            name=name, source=source, tags=tags or {}, description=description,
            run_id=run_id, model_id=model_id,
        )
        return self.get(name, mv.version)

    def resolve(self, model_uri: str) -> tuple[str, str | None, str | None]:
        """``(source, run id, logged model id)`` to register ``model_uri`` with, as MLflow's own
        ``register_model`` resolves it.

        MLflow 3 logs a model as a *logged model* (``models:/m-<id>``), not as files under the run: a
        ``runs:/<run>/<name>`` URI of such a model must be registered as the logged model it names, or the
        version's source holds no ``MLmodel`` and no replica can load it.
        """
        model_id = _logged_model_id_of(model_uri)
        if model_id is not None:
            return model_uri, self.client.get_logged_model(model_id).source_run_id, model_id
        if not model_uri.startswith("runs:/"):
            return model_uri, None, None
        run_id, _, path = model_uri.removeprefix("runs:/").partition("/")
        logged = self._logged_models(run_id, path.strip("/"))
        if not logged:  # files under the run itself (MLflow 2's layout, or logged by hand): the deploy checks them
            return model_uri, run_id, None
        model_id = logged[-1].model_id
        return f"models:/{model_id}", run_id, model_id

    def _logged_models(self, run_id: str, name: str) -> list:
        """The run's logged models called ``name``, the one logged at the largest step last."""
        run = self.client.get_run(run_id)
        found, token = [], None
        while True:
            page = self.client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                                    filter_string=f"name = '{name}'", page_token=token)
            found += [m for m in page if m.source_run_id == run_id]
            token = page.token
            if not token:
                break
        steps = {o.model_id: o.step for o in (run.outputs.model_outputs if run.outputs else [])}
        return sorted(found, key=lambda m: steps.get(m.model_id, 0))

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

    def root_files(self, info: "ModelVersionInfo") -> set[str]:
        """The files at the root of what ``models:/<name>/<version>`` downloads: what a replica loads from.

        MLflow answers some single-file reads of a broken version through a fallback (so its metadata looks
        fine) while the download a replica makes comes back empty; the listing shows what the download sees.
        """
        repo = ModelsArtifactRepository(info.uri, tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return {a.path for a in repo.list_artifacts("") if "/" not in a.path}

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

