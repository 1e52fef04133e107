"""Every documented way to register a version deploys, and a version no replica could load fails fast.

MLflow 3 logs a model as a *logged model* (``models:/m-...``); its run holds no
model files. A version registered from ``runs:/<run>/model`` must therefore
point at the logged model, as MLflow's own ``register_model`` does, or every
replica dies at start-up with "Could not find an MLmodel". Runs on the
session's platform, with a model no component serves (so no webhook deploys it).
"""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from compoundry.flows.deploy import deploy_model_version
from compoundry.registry.model_store import ModelStore
from compoundry.store import PlatformStore

pytestmark = pytest.mark.integration
MODEL = "compoundry-test-registration"


@pytest.fixture(scope="module")
def logged_run(platform):
    """A scikit-learn model logged the documented way; ``(run id, the logged model's URI)``."""
    mlflow.set_tracking_uri(platform.mlflow_url)
    features, labels = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    with mlflow.start_run(run_name="registration-test") as run:
        info = mlflow.sklearn.log_model(LogisticRegression().fit(features, labels), name="model",
                                        signature=mlflow.models.infer_signature(features, labels))
    return run.info.run_id, info.model_uri


def test_a_runs_uri_registers_the_logged_model_and_loads(platform, logged_run):
    run_id, logged_uri = logged_run
    store = ModelStore(platform.mlflow_url)
    version = store.register(MODEL, f"runs:/{run_id}/model", tags={"compoundry.deploy": "false"})
    registered = store.client.get_model_version(MODEL, version.version)
    assert registered.source == logged_uri and registered.run_id == run_id  # MLflow's own resolution
    assert "MLmodel" in store.root_files(version)
    assert type(mlflow.pyfunc.load_model(version.uri)).__name__ == "PyFuncModel"  # what a replica does


def test_a_version_no_replica_could_load_fails_the_deploy_before_anything_is_built(platform, logged_run):
    """The raw registration the README's path used to make: the source is the run's (empty) model folder."""
    run_id, _ = logged_run
    client = MlflowClient(platform.mlflow_url)
    broken = client.create_model_version(MODEL, source=f"runs:/{run_id}/model", run_id=run_id,
                                         tags={"compoundry.deploy": "false"})
    assert ModelStore(platform.mlflow_url).root_files(ModelStore(platform.mlflow_url).get(MODEL, broken.version)) \
        == set()
    with pytest.raises(Exception, match="cannot be loaded: .* has no MLmodel at its root. Register the logged model"):
        deploy_model_version(MODEL, broken.version, component="intent-classifier", set_serving_alias=False)
    assert not [d for d in PlatformStore(platform.database_url).deployments() if d.model_name == MODEL]
