"""Demo models (compoundry/registry/demo_models.py) and the pure parts of the Bentos, without MLflow servers."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from bentos.common import to_jsonable
from bentos.llm.engines import choose_engine
from compoundry.registry import demo_models as dm


def test_intent_classifier_beats_floor_on_held_out_set():
    pipeline, accuracy, x_eval, _ = dm.train_intent_pipeline()
    assert len(x_eval) >= 25
    assert accuracy >= 0.75
    out = dm.IntentClassifier(pipeline).predict(None, ["Where is my order 1042? It has not arrived yet."])
    assert out[0]["label"] == "order_status" and 0 < out[0]["score"] <= 1


def test_retriever_finds_the_obvious_article(tmp_path):
    emb = tmp_path / "emb.npy"
    articles = [json.loads(x) for x in (dm.DATA_DIR / "knowledge_base.jsonl").read_text().splitlines()]
    model = dm._minilm()
    np.save(emb, model.encode([f"{a['title']}. {a['text']}" for a in articles], normalize_embeddings=True))
    retriever = dm.KBRetriever()
    retriever.load_context(SimpleNamespace(artifacts={"articles": str(dm.DATA_DIR / "knowledge_base.jsonl"),
                                                      "embeddings": str(emb)}))
    query = model.encode(["How do I reset my password? I forgot it."]).tolist()
    top = retriever.predict(None, query)[0]
    assert len(top) == 3 and top[0]["id"] == "kb-password-reset"
    assert top[0]["score"] >= top[1]["score"] >= top[2]["score"]
    assert set(top[0]) == {"id", "title", "text", "score"}


def test_sql_executor_finds_orders_and_can_fail(tmp_path):
    sql = dm.SQLExecutor()
    sql.load_context(SimpleNamespace(artifacts={"db": str(dm.build_orders_db(tmp_path / "orders.db"))}))
    rows = sql.predict(None, [{"intent": "order_status", "question": "Where is my order 1042? Not here yet."}])
    assert [r["order_id"] for r in rows] == [1042] and rows[0]["status"]
    assert sql.predict(None, [{"intent": "billing", "question": "Refund for order 1042"}]) == []
    assert sql.predict(None, [{"intent": "order_status", "question": "order 99999999'; DROP TABLE orders"}]) == []
    with pytest.raises(RuntimeError, match="FAIL_SQL"):
        sql.predict(None, [{"intent": "order_status", "question": "FAIL_SQL order 1042"}])


def test_tiny_llm_tokenizer_round_trips_and_has_chat_template(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    hf_dir = dm.build_tiny_llm(tmp_path / "hf", train_steps=0)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    text = "Where is my order 1042? Ünïcödé too."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.eos_token == "</s>" and tok.pad_token == "<pad>" and tok.bos_token == "<s>"
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "hi" in prompt and prompt.endswith("<|assistant|>\n")
    config = AutoConfig.from_pretrained(hf_dir)
    assert config.num_hidden_layers == 2 and config.hidden_size == 64 and config.vocab_size == len(tok)
    assert any(p.suffix == ".safetensors" for p in hf_dir.iterdir())


@pytest.mark.parametrize("cuda,vllm,requested,expected", [
    (False, False, None, "transformers"),
    (True, False, None, "transformers"),
    (False, True, None, "transformers"),
    (True, True, None, "vllm"),
    (True, True, "transformers", "transformers"),
    (True, True, " VLLM ", "vllm"),
    (False, False, "transformers", "transformers"),
    (True, True, "", "vllm"),
])
def test_choose_engine(cuda, vllm, requested, expected):
    assert choose_engine(cuda, vllm, requested) == expected


@pytest.mark.parametrize("cuda,vllm,requested", [(False, True, "vllm"), (True, False, "vllm"), (True, True, "tgi")])
def test_choose_engine_rejects_impossible_requests(cuda, vllm, requested):
    with pytest.raises(ValueError):
        choose_engine(cuda, vllm, requested)


def test_demo_catalogue_and_smoke_inputs():
    assert set(dm.DEMO_MODELS) == {"embedder", "kb-retriever", "intent-classifier", "sql-executor", "dialogue-llm"}
    assert dm.DEMO_MODELS["dialogue-llm"][0] == "compoundry-dialogue-llm"
    assert dm.smoke_input("sentence-transformers", "compoundry-embedder") == {"texts": ["Where is my order 1042?"]}
    assert len(dm.smoke_input("pyfunc", "compoundry-kb-retriever")["data"][0]) == dm.EMBEDDING_DIM
    assert dm.smoke_input("pyfunc", "compoundry-sql-executor")["data"][0]["intent"] == "order_status"
    assert dm.smoke_input("pyfunc", "compoundry-intent-classifier")["data"] == ["Where is my order 1042?"]
    assert dm.smoke_input("llm", "compoundry-dialogue-llm")["messages"][0]["role"] == "user"
    with pytest.raises(ValueError):
        dm.smoke_input("onnx", "x")


def test_to_jsonable_converts_numpy_and_pandas():
    import pandas as pd

    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, float("nan")]})
    assert to_jsonable(frame) == [{"a": 1, "b": 0.5}, {"a": 2, "b": None}]
    assert to_jsonable(pd.Series([1, 2])) == [1, 2]
    assert to_jsonable(np.array([[1.5, 2.0]], dtype=np.float32)) == [[1.5, 2.0]]
    assert to_jsonable({"x": np.int64(3), "y": (np.bool_(True),)}) == {"x": 3, "y": [True]}
    json.dumps(to_jsonable({"t": pd.Timestamp("2026-01-01")}))


def test_llm_request_parsing():
    from bentos.llm.service import BadRequest, parse_request

    defaults = {"max_tokens": 48}
    assert parse_request({"prompt": "hi"}, defaults) == (None, "hi", 48, 0.0)
    msgs = [{"role": "user", "content": "hi"}]
    assert parse_request({"messages": msgs, "max_tokens": 5, "temperature": 0.7}, defaults) == (msgs, None, 5, 0.7)
    for bad in ({}, {"prompt": 3}, {"messages": []}, {"messages": [{"role": "user"}]},
                {"prompt": "x", "max_tokens": 0}, {"prompt": "x", "max_tokens": True},
                {"prompt": "x", "temperature": "hot"}, [1]):
        with pytest.raises(BadRequest):
            parse_request(bad, defaults)


def test_build_context_carries_common_and_gpu_variant_lists_vllm(tmp_path):
    import yaml

    from bentos.build import prepare_context

    cpu = yaml.safe_load(prepare_context("llm", tmp_path / "cpu").read_text())
    assert (tmp_path / "cpu" / "bentos" / "common.py").exists()
    assert cpu["python"]["lock_packages"] is False
    assert not any(p.startswith("vllm") for p in cpu["python"]["packages"])
    gpu = yaml.safe_load(prepare_context("llm", tmp_path / "gpu", gpu=True).read_text())
    assert any(p.startswith("vllm") for p in gpu["python"]["packages"])
    assert not any(p.startswith("torch") for p in gpu["python"]["packages"])
    with pytest.raises(ValueError):
        prepare_context("onnx", tmp_path / "x")
