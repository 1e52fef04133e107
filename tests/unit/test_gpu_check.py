"""bench/gpu_check: what runs without a GPU - arguments, the JSON's shape, the no-CUDA exit, load counting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench import gpu_check, gpu_check_steps

ROOT = Path(__file__).resolve().parents[2]


def test_arguments_default_to_the_tiny_model_and_out(monkeypatch, tmp_path):
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.delenv("GPU_CHECK_MODEL", raising=False)
    args = gpu_check.parse_args([])
    assert args.model == "tiny" and args.out == tmp_path and args.skip == []
    assert gpu_check.parse_args(["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--skip", "gateway"]).skip == ["gateway"]
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--requests", "0"])


def test_without_cuda_nothing_runs_and_the_json_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check, "cuda_info", lambda: None)
    monkeypatch.setattr(gpu_check, "Run", None)  # nothing past the check may start
    assert gpu_check.main(["--out", str(tmp_path)]) == gpu_check.EXIT_NO_CUDA
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["status"] == "no_cuda" and "no CUDA" in report["message"] and report["exit_code"] == 3
    assert report["steps"] == {"cuda": {"status": "skipped", "seconds": 0.0, "detail": report["steps"]["cuda"]["detail"]}}
    assert set(report["tokens_per_s"]) == {"raw_vllm", "bento_direct", "gateway"}
    assert {"sleep_wake", "versions", "settings", "gateway_vs_raw", "wall_s"} <= set(report)


def test_the_shell_script_exits_3_without_cuda_and_leaves_nothing(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "no CUDA" in done.stderr
    assert json.loads((tmp_path / "gpu_check.json").read_text())["status"] == "no_cuda"
    assert not (tmp_path / "gpu_check.pids").exists()


def _fake_gpu(monkeypatch):
    monkeypatch.setattr(gpu_check, "cuda_info", lambda: {"gpus": ["NVIDIA H200, 570.1, 143771 MiB"]})
    monkeypatch.setattr(gpu_check_steps, "ensure_venv", lambda *a, **kw: "reused")
    monkeypatch.setattr(gpu_check_steps, "python_versions", lambda python: {"torch": "2.8.0", "vllm": "0.11.0"})


def test_a_model_that_cannot_be_fetched_exits_4_and_says_which(monkeypatch, tmp_path):
    _fake_gpu(monkeypatch)

    def unavailable(*a, **kw):
        raise gpu_check_steps.ModelUnavailable("MODEL_UNAVAILABLE LocalEntryNotFoundError: offline")

    monkeypatch.setattr(gpu_check_steps, "prepare_model", unavailable)
    assert gpu_check.main(["--out", str(tmp_path), "--model", "org/missing"]) == gpu_check.EXIT_MODEL
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["status"] == "model_unavailable" and "org/missing" in report["message"]
    assert report["steps"]["model"]["status"] == "unavailable" and report["versions"]["vllm"] == "0.11.0"


def test_a_failed_step_is_recorded_and_ends_the_run(monkeypatch, tmp_path):
    _fake_gpu(monkeypatch)
    monkeypatch.setattr(gpu_check_steps, "prepare_model", lambda *a, **kw: (tmp_path / "m", tmp_path / "hf"))
    monkeypatch.setattr(gpu_check.Run, "tests_gpu", lambda self: (_ for _ in ()).throw(RuntimeError("2 failed")))
    assert gpu_check.main(["--out", str(tmp_path)]) == gpu_check.EXIT_FAILED
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["status"] == "failed" and "tests_gpu" in report["message"]
    assert report["steps"]["tests_gpu"]["status"] == "failed" and "2 failed" in report["steps"]["tests_gpu"]["error"]
    assert "raw_vllm" not in report["steps"]


def test_the_gpu_environment_is_the_bentos_without_its_cpu_torch():
    requirements = gpu_check_steps.gpu_requirements()
    assert not [r for r in requirements if r.startswith("torch")]
    assert any(r.startswith("vllm") for r in requirements) and any(r.startswith("bentoml") for r in requirements)
    assert any(r.startswith("mlflow") for r in requirements)  # the Bento loads its model from MLflow


class _Chat(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"usage": {"completion_tokens": 5}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_load_counts_generated_tokens_from_usage():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Chat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = gpu_check_steps.chat_load(f"http://127.0.0.1:{server.server_port}", "chat", 20, 4, 8, key="k")
    finally:
        server.shutdown()
    assert result["ok"] == 20 and result["errors"] == 0 and result["tokens"] == 100
    assert result["tokens_per_s"] > 0 and result["latency_p50_s"] <= result["latency_p95_s"]


def test_junit_counts(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite tests="1" failures="0" errors="0" skipped="1"/></testsuites>')
    assert gpu_check_steps.junit_counts(xml) == {"tests": 1, "failures": 0, "errors": 0, "skipped": 1}
    assert gpu_check_steps.junit_counts(tmp_path / "none.xml") == {}
