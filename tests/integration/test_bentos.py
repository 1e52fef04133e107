"""Real Bentos: log + register the demo models in a local MLflow store (no server), build each Bento with
`bentos/build.py`, start `bentoml serve` processes concurrently, and check the component call protocol."""

import json
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bentos.build import serve_command

pytestmark = pytest.mark.integration

# replica name → (engine, demo component); two pyfunc replicas: a tool that can fail and a classifier
REPLICAS = {
    "embedding": ("sentence-transformers", "embedder"),
    "llm": ("llm", "dialogue-llm"),
    "sql": ("pyfunc", "sql-executor"),
    "intent": ("pyfunc", "intent-classifier"),
}
READY_TIMEOUT_S = 150
MEASURED: dict[str, dict] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, started: float) -> float:
    while time.monotonic() - started < READY_TIMEOUT_S:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {READY_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def bento_replicas(tmp_path_factory):
    import mlflow

    from bentos.build import build_bento
    from compoundry.registry.demo_models import DEMO_MODELS

    tmp = tmp_path_factory.mktemp("bentos")
    tracking = f"sqlite:///{tmp}/mlflow.db"
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking)
    try:
        experiment = mlflow.create_experiment("bento-tests", artifact_location=(tmp / "artifacts").as_uri())
        uris = {}
        for _, component in REPLICAS.values():
            if component in uris:
                continue
            name, log_model = DEMO_MODELS[component]
            with mlflow.start_run(experiment_id=experiment, run_name=component):
                started = time.perf_counter()
                uri = log_model()
                MEASURED.setdefault("log_s", {})[component] = round(time.perf_counter() - started, 2)
            uris[component] = f"models:/{name}/{mlflow.register_model(uri, name).version}"
    finally:
        mlflow.set_tracking_uri(previous_uri)

    home = tmp / "bentoml"
    tags = {}
    for engine in {e for e, _ in REPLICAS.values()}:
        started = time.perf_counter()
        tags[engine] = build_bento(engine, {"component": "test", "engine": engine}, bentoml_home=home)
        MEASURED.setdefault("build_s", {})[engine] = round(time.perf_counter() - started, 2)

    procs, replicas = [], {}
    try:
        for key, (engine, component) in REPLICAS.items():
            port, log = _free_port(), tmp / f"{key}.log"
            env = dict(os.environ, BENTOML_HOME=str(home), MLFLOW_TRACKING_URI=tracking, HF_HUB_OFFLINE="1",
                       COMPOUNDRY_MODEL_URI=uris[component],
                       COMPOUNDRY_ENGINE_OPTIONS=json.dumps({"max_new_tokens": 12} if engine == "llm" else {}))
            with open(log, "wb") as out:
                proc = subprocess.Popen(serve_command(tags[engine], port, "127.0.0.1"), env=env, stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            procs.append(proc)
            replicas[key] = {"url": f"http://127.0.0.1:{port}", "proc": proc, "log": log, "started": time.monotonic(),
                             "uri": uris[component], "tag": tags[engine], "env": env}
        with ThreadPoolExecutor(len(replicas)) as pool:
            waits = {k: pool.submit(_wait_ready, r["url"], r["proc"], r["log"], r["started"])
                     for k, r in replicas.items()}
            MEASURED["serve_to_ready_s"] = {k: round(f.result(), 2) for k, f in waits.items()}
        yield replicas
    finally:
        for proc in procs:
            _stop(proc)
        print("\nBento measurements:", json.dumps(MEASURED))


def _post(replica: dict, path: str, body: object, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{replica['url']}{path}", json=body, timeout=timeout)


@pytest.mark.parametrize("key", list(REPLICAS))
def test_info_reports_load(bento_replicas, key):
    replica = bento_replicas[key]
    assert replica["tag"].startswith("compoundry-")
    info = _post(replica, "/info", {}).json()
    assert info["ready"] is True and info["model_uri"] == replica["uri"]
    assert info["engine"] == {"embedding": "sentence-transformers", "llm": "transformers"}.get(key, "pyfunc")
    assert 0 < info["model_load_s"] < READY_TIMEOUT_S
    MEASURED.setdefault("model_load_s", {})[key] = info["model_load_s"]
    assert httpx.get(f"{replica['url']}/livez", timeout=5).status_code == 200


def test_embedding_invoke(bento_replicas):
    body = _post(bento_replicas["embedding"], "/invoke", {"inputs": {"texts": ["hello", "where is my order?"]}}).json()
    assert body["dim"] == 384 and len(body["embeddings"]) == 2 and len(body["embeddings"][0]) == 384


def test_pyfunc_invoke(bento_replicas):
    rows = _post(bento_replicas["sql"], "/invoke",
                 {"inputs": {"data": [{"intent": "order_status", "question": "Where is order 1042?"}]}}).json()
    assert rows["predictions"][0]["order_id"] == 1042
    labels = _post(bento_replicas["intent"], "/invoke", {"inputs": {"data": ["I was charged twice, refund me"]}}).json()
    assert labels["predictions"][0]["label"] == "billing" and isinstance(labels["predictions"][0]["score"], float)


def test_pyfunc_model_failure_is_a_json_500(bento_replicas):
    response = _post(bento_replicas["sql"], "/invoke",
                     {"inputs": {"data": [{"intent": "order_status", "question": "FAIL_SQL 1042"}]}})
    assert response.status_code == 500 and "FAIL_SQL" in response.json()["error"]


@pytest.mark.parametrize("key,body", [
    ("embedding", {"inputs": {"texts": "not a list"}}),
    ("embedding", {"inputs": {}}),
    ("embedding", {"wrong": {}}),
    ("intent", {"inputs": {"rows": []}}),
    ("intent", {"inputs": "text"}),
    ("sql", {"inputs": {"data": "not records"}}),
    ("llm", {"inputs": {"max_tokens": 3}}),
    ("llm", {"inputs": {"prompt": "x", "max_tokens": -1}}),
])
def test_bad_requests_are_json_4xx(bento_replicas, key, body):
    response = _post(bento_replicas[key], "/invoke", body)
    assert 400 <= response.status_code < 500, response.text
    assert isinstance(response.json(), dict) and response.json()["error"]


def test_llm_invoke_messages_and_prompt(bento_replicas):
    llm = bento_replicas["llm"]
    chat = _post(llm, "/invoke", {"inputs": {"messages": [{"role": "user", "content": "Where is my order?"}],
                                             "max_tokens": 6, "temperature": 0}}).json()
    assert chat["engine"] == "transformers" and isinstance(chat["text"], str)
    assert 0 < chat["usage"]["completion_tokens"] <= 6
    assert chat["usage"]["total_tokens"] == chat["usage"]["prompt_tokens"] + chat["usage"]["completion_tokens"]
    plain = _post(llm, "/invoke", {"inputs": {"prompt": "Customer: hello\nAgent:"}}).json()
    assert plain["usage"]["completion_tokens"] <= 12  # engine option max_new_tokens


def test_llm_openai_routes(bento_replicas):
    llm = bento_replicas["llm"]
    models = httpx.get(f"{llm['url']}/v1/models", timeout=10).json()
    assert models["data"][0]["id"] == "compoundry-dialogue-llm"
    chat = _post(llm, "/v1/chat/completions", {"model": "compoundry-dialogue-llm", "max_tokens": 5,
                                               "messages": [{"role": "user", "content": "hi"}]}).json()
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"
    completion = _post(llm, "/v1/completions", {"model": "m", "prompt": "Customer:", "max_tokens": 5}).json()
    assert completion["object"] == "text_completion" and isinstance(completion["choices"][0]["text"], str)
    bad = _post(llm, "/v1/chat/completions", {"model": "m"})
    assert bad.status_code == 400 and bad.json()["error"]["message"]


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Where is my order?"}]}),
    ("/v1/completions", {"prompt": "Customer: where is my order?\nAgent:"}),
])
def test_llm_openai_streaming(bento_replicas, path, body):
    events = []
    with httpx.stream("POST", f"{bento_replicas['llm']['url']}{path}", timeout=60,
                      json={**body, "model": "m", "max_tokens": 6, "stream": True}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[len("data: "):])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) >= 2 and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    field = "delta" if "chat" in path else "text"
    assert all(field in c["choices"][0] for c in chunks)


def test_unloadable_model_makes_the_server_exit(bento_replicas, tmp_path):
    """A replica whose model cannot load exits (BentoML alone would respawn the worker forever)."""
    sql = bento_replicas["sql"]
    env = dict(sql["env"], COMPOUNDRY_MODEL_URI="models:/compoundry-no-such-model/1")
    started = time.monotonic()
    with open(tmp_path / "bad.log", "wb") as out:
        proc = subprocess.Popen(serve_command(sql["tag"], _free_port(), "127.0.0.1"), env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(60)
    finally:
        _stop(proc)
    assert time.monotonic() - started < 60
    assert "could not load models:/compoundry-no-such-model/1" in (tmp_path / "bad.log").read_text()
