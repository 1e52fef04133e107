"""MLflow pyfunc Bento: `{"data": <json>}` → `{"predictions": <json>}` (any logged pyfunc model)."""

import logging

import bentoml
from bentoml.exceptions import InvalidArgument

from bentos.common import ServiceInfo, bad_request, model_error, timed_load, to_jsonable

logger = logging.getLogger("compoundry.bento.pyfunc")


def _load(uri: str):
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(uri)


@bentoml.service(name="compoundry-pyfunc", workers=1, traffic={"timeout": 60})
class PyfuncService:
    def __init__(self) -> None:
        self.state = ServiceInfo(engine="pyfunc")
        self.model = timed_load(self.state, _load)
        signature = self.model.metadata.signature
        self.state.extra["signature"] = signature.to_dict() if signature is not None else None

    def __is_ready__(self) -> bool:
        return self.state.ready

    @bentoml.api
    def invoke(self, inputs: dict) -> dict:
        try:
            return self._predict(inputs)
        except InvalidArgument as exc:
            return bad_request(exc)

    def _predict(self, inputs: dict) -> dict:
        if "data" not in inputs:
            raise InvalidArgument("inputs.data is required (the JSON passed to the model's predict)")
        try:
            predictions = self.model.predict(inputs["data"], params=inputs.get("params"))
        except Exception as exc:  # schema enforcement and model errors are the caller's input problem
            from mlflow.exceptions import MlflowException

            if isinstance(exc, (MlflowException, ValueError, TypeError, KeyError)):
                raise InvalidArgument(f"predict rejected inputs.data: {exc}") from exc
            logger.exception("predict failed")
            return model_error(exc)
        return {"predictions": to_jsonable(predictions)}

    @bentoml.api
    def info(self) -> dict:
        return self.state.as_dict()
