"""Sentence-transformers Bento: `{"texts": [str]}` → `{"embeddings": [[float]], "dim": int}`."""

import bentoml
from bentoml.exceptions import InvalidArgument

from bentos.common import ServiceInfo, bad_request, require, timed_load


def _load(uri: str):
    import mlflow.sentence_transformers

    return mlflow.sentence_transformers.load_model(uri)


@bentoml.service(name="compoundry-embedding", workers=1, traffic={"timeout": 60})
class EmbeddingService:
    def __init__(self) -> None:
        self.state = ServiceInfo(engine="sentence-transformers")
        self.model = timed_load(self.state, _load)
        self.dim = int(self.model.get_sentence_embedding_dimension() or 0)
        self.state.extra["dim"] = self.dim

    def __is_ready__(self) -> bool:
        return self.state.ready

    @bentoml.api
    def invoke(self, inputs: dict) -> dict:
        try:
            return self._embed(inputs)
        except InvalidArgument as exc:
            return bad_request(exc)

    def _embed(self, inputs: dict) -> dict:
        texts = require(inputs, "texts", list, "a list of strings")
        if not all(isinstance(t, str) for t in texts):
            raise InvalidArgument("inputs.texts must be a list of strings")
        if not texts:
            return {"embeddings": [], "dim": self.dim}
        vectors = self.model.encode(texts, convert_to_numpy=True, show_progress_bar=False)
        return {"embeddings": vectors.astype(float).tolist(), "dim": int(vectors.shape[1])}

    @bentoml.api
    def info(self) -> dict:
        return self.state.as_dict()
