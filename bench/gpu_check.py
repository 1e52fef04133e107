"""GPU check: vLLM in the llm Bento's own environment, served through the Bento and the gateway, timed.

Run by ``bench/gpu_check.sh`` on a machine with CUDA (docs/operations.md#gpu-check). Each step lands in
the JSON with its status, seconds and details, so a partial run still says how far it got:

1. ``cuda``: nvidia-smi answers; if not, the JSON says ``no_cuda`` and the run exits 3 before installing anything;
2. ``gpu_env``: a venv with the llm Bento's packages (bentofile.yaml, torch dropped as ``bentos/build.py`` does
   for the GPU image) + ``requirements-gpu.txt`` (vLLM) + BentoML; reused while the requirements are unchanged;
3. ``platform_env``: the platform's ``.venv`` (the gateway runs there; vLLM never does);
4. ``model``: the Bento's input, an MLflow pyfunc with artifact ``hf_model``: ``tiny`` builds the demo's
   2-layer LLM offline; a Hugging Face id is downloaded (failure: ``model_unavailable``, exit 4); a directory is used;
5. ``tests_gpu``: ``pytest tests/gpu`` in the GPU venv;
6. ``raw_vllm``: tokens/s of vLLM's ``AsyncLLMEngine`` in process (same prompts, concurrency and greedy
   decoding as the HTTP runs), then ``sleep(level=1)`` / ``wake_up()`` times and the GPU memory sleep frees;
7. ``bento``: ``bentoml serve bentos.llm.service:LLMService`` with ``COMPOUNDRY_LLM_ENGINE=vllm``,
   tokens/s straight to it;
8. ``gateway``: a compoundry gateway in front of it (``bench/gateway_servers.start_gateway``), tokens/s through it.

The top level is stdlib-only: the orchestration runs under any python3, ``raw`` under the GPU venv, and
``hold-gateway`` under the platform's interpreter. Exit: 0 passed, 1 a step failed, 2 usage, 3 no CUDA, 4 no model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import gpu_check_steps as steps  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_NO_CUDA, EXIT_MODEL = 0, 1, 3, 4  # 2: argparse's usage error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("GPU_CHECK_MODEL", "tiny"),
                        help="'tiny' (built offline, default), a Hugging Face id, or a local HF directory")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench" / "results"),
                        help="where gpu_check.json and the logs go (default: $OUT, else bench/results)")
    parser.add_argument("--gpu-venv", type=Path, default=Path(os.environ.get("GPU_CHECK_VENV",
                                                                             ROOT / "bench" / ".gpu-venv")))
    parser.add_argument("--platform-python", type=Path, default=ROOT / ".venv" / "bin" / "python")
    parser.add_argument("--requests", type=int, default=256, help="requests per throughput run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--budget-s", type=float, default=540, help="stop starting steps after this long")
    parser.add_argument("--skip", action="append", default=[], choices=["tests_gpu", "raw_vllm", "bento", "gateway"])
    parser.add_argument("--no-install", action="store_true", help="fail instead of creating a missing venv")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="plumbing only, no GPU: the Bento on transformers from --gpu-venv, no tests_gpu/raw_vllm")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.max_tokens < 1:
        parser.error("--requests, --concurrency and --max-tokens must be positive")
    return args


class Report:
    """The JSON being built: one entry per step, rewritten after every step (a killed run leaves what it had)."""

    def __init__(self, path: Path, args: argparse.Namespace):
        self.path, self.started = path, time.monotonic()
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.data = {"status": "running", "message": "", "started_at": now,
                     "model": args.model, "settings": {"requests": args.requests, "concurrency": args.concurrency,
                                                       "max_tokens": args.max_tokens},
                     "versions": {"python": platform.python_version()}, "steps": {},
                     "tokens_per_s": {"raw_vllm": None, "bento_direct": None, "gateway": None},
                     "gateway_vs_raw": None, "sleep_wake": None}

    def step(self, name: str, status: str, seconds: float, **detail) -> None:
        self.data["steps"][name] = {"status": status, "seconds": round(seconds, 2), **detail}
        self.write()

    def finish(self, status: str, message: str, code: int) -> int:
        self.data.update(status=status, message=message, exit_code=code,
                         wall_s=round(time.monotonic() - self.started, 1))
        raw, gateway = self.data["tokens_per_s"]["raw_vllm"], self.data["tokens_per_s"]["gateway"]
        self.data["gateway_vs_raw"] = round(gateway / raw, 3) if raw and gateway else None
        self.write()
        print(f"gpu_check: {status}: {message} ({self.path})", file=sys.stderr if code else sys.stdout)
        return code

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)


def cuda_info() -> dict | None:
    """GPUs and driver from nvidia-smi, or None when there is no usable NVIDIA GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    gpus = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not gpus:
        return None
    version = subprocess.run([smi], capture_output=True, text=True, timeout=30).stdout
    cuda = next((part.split(":")[1].strip().split()[0] for part in version.split("|") if "CUDA Version" in part), None)
    return {"gpus": gpus, "cuda_driver_version": cuda}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    report = Report(out / "gpu_check.json", args)
    gpu = cuda_info()
    if args.cpu_dry_run:
        report.step("cuda", "skipped", 0.0, detail="--cpu-dry-run: the Bento runs on transformers")
        args.skip += ["tests_gpu", "raw_vllm"]
        return Run(args, out, report).all()
    if gpu is None:
        report.step("cuda", "skipped", 0.0, detail="nvidia-smi is missing or lists no GPU")
        return report.finish("no_cuda", "no CUDA GPU on this machine (nvidia-smi found none): nothing was run; "
                                        "run bench/gpu_check.sh on a machine with an NVIDIA GPU", EXIT_NO_CUDA)
    report.data["versions"]["nvidia_smi"] = gpu
    report.step("cuda", "ok", 0.0, **gpu)
    return Run(args, out, report).all()


class Run:
    """The steps after the CUDA check, in order; each one's failure is recorded and ends the run."""

    def __init__(self, args: argparse.Namespace, out: Path, report: Report):
        self.args, self.out, self.report = args, out, report
        self.deadline = report.started + args.budget_s
        self.gpu_python = args.gpu_venv.resolve() / "bin" / "python"
        self.work = Path(os.environ.get("GPU_CHECK_WORK") or ROOT / "bench" / ".gpu-work")  # models: not results
        self.procs: list[subprocess.Popen] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timed(self, name: str, fn, *a, **kw):
        """Run one step; record ok/failed with its seconds and what ``fn`` returned (a dict merges in)."""
        if self.left() <= 0:
            raise StepFailed(name, f"the budget of {self.args.budget_s:g} s was spent before {name}")
        started = time.monotonic()
        try:
            value = fn(*a, **kw)
        except steps.ModelUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded in the JSON, then the run ends
            self.report.step(name, "failed", time.monotonic() - started, error=f"{type(exc).__name__}: {exc}"[:2000])
            raise StepFailed(name, str(exc)[:300]) from exc
        self.report.step(name, "ok", time.monotonic() - started, **(value if isinstance(value, dict) else {}))
        return value

    def all(self) -> int:
        self.work.mkdir(parents=True, exist_ok=True)
        try:
            return self._steps()
        except steps.ModelUnavailable as exc:
            self.report.step("model", "unavailable", 0.0, error=str(exc))
            return self.report.finish("model_unavailable", f"model {self.args.model!r} could not be fetched: {exc}; "
                                      "use --model tiny (built offline) or a local directory", EXIT_MODEL)
        except StepFailed as exc:
            return self.report.finish("failed", f"step {exc.step} failed: {exc.why}", EXIT_FAILED)
        except Exception as exc:  # noqa: BLE001 - a bug here must still leave a JSON that says so
            return self.report.finish("failed", f"the check itself failed: {type(exc).__name__}: {exc}", EXIT_FAILED)
        finally:
            self.stop_all()

    def _steps(self) -> int:
        a, log = self.args, self.out / "gpu_check_install.log"
        if not a.cpu_dry_run:
            self.timed("gpu_env", lambda: {"result": steps.ensure_venv(a.gpu_venv.resolve(), steps.gpu_requirements(),
                                                                       log, self.left(), create=not a.no_install),
                                           "venv": str(a.gpu_venv), "requirements": steps.gpu_requirements()})
        self.report.data["versions"].update(steps.python_versions(self.gpu_python))
        platform_python = a.platform_python
        if not a.platform_python.exists() and not a.no_install:
            self.timed("platform_env", lambda: {"result": steps.ensure_venv(
                a.platform_python.parent.parent, [], log, self.left(), editable=True)})
        mlflow_model, hf_dir = self.timed("model", lambda: steps.prepare_model(
            self.gpu_python, a.model, self.work / "model", self.out / "gpu_check_model.log", self.left()))
        self.report.data["steps"]["model"]["hf_dir"] = str(hf_dir)
        if "tests_gpu" not in a.skip:
            self.timed("tests_gpu", self.tests_gpu)
        if "raw_vllm" not in a.skip:
            raw = self.timed("raw_vllm", self.raw, hf_dir)
            self.report.data["tokens_per_s"]["raw_vllm"] = raw["load"]["tokens_per_s"]
            self.report.data["sleep_wake"] = {k: raw.get(k) for k in ("sleep_s", "wake_s", "freed_mib",
                                                                        "first_call_after_wake_s", "sleep_error")}
        if "bento" in a.skip:
            return self.report.finish("ok", "the steps asked for passed", EXIT_OK)
        bento_url = self.timed("bento_start", self.start_bento, mlflow_model)["url"]
        direct = self.timed("bento_direct", self.load, bento_url, steps.served_model(bento_url))
        self.report.data["tokens_per_s"]["bento_direct"] = direct["tokens_per_s"]
        if "gateway" not in a.skip:
            gateway = self.timed("gateway_start", self.start_gateway, platform_python, bento_url)
            through = self.timed("gateway", self.load, gateway["url"], "chat", gateway["key"])
            self.report.data["tokens_per_s"]["gateway"] = through["tokens_per_s"]
        dry = " (--cpu-dry-run: the plumbing only, no GPU, no vLLM)" if a.cpu_dry_run else ""
        return self.report.finish("ok", "every step passed" + dry, EXIT_OK)

    def tests_gpu(self) -> dict:
        junit = self.out / "gpu_check_tests.xml"
        done = steps.run_logged([str(self.gpu_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/gpu",
                                 f"--junitxml={junit}", "-o", "addopts="], self.out / "gpu_check_tests.log",
                                self.left(), {**os.environ, "PYTHONPATH": str(ROOT)})
        counts = steps.junit_counts(junit)
        if done.returncode != 0 or counts.get("skipped") or not counts.get("tests"):
            raise RuntimeError(f"pytest tests/gpu: exit {done.returncode}, {counts} (a skip means CUDA or vllm "
                               f"is missing in the GPU venv): {steps.tail(self.out / 'gpu_check_tests.log', 800)}")
        return counts

    def raw(self, hf_dir: Path) -> dict:
        a, log = self.args, self.out / "gpu_check_raw.log"
        done = steps.run_logged([str(self.gpu_python), str(ROOT / "bench" / "gpu_check_steps.py"), "raw", str(hf_dir),
                                 str(a.requests), str(a.concurrency), str(a.max_tokens)], log, self.left())
        line = next((ln for ln in reversed(steps.tail(log, 20000).splitlines()) if ln.startswith("RAW ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"raw vLLM run failed (exit {done.returncode}): {steps.tail(log, 800)}")
        return json.loads(line[4:])

    def start_bento(self, mlflow_model: Path) -> dict:
        port = steps.free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "COMPOUNDRY_MODEL_URI": str(mlflow_model),
               "COMPOUNDRY_LLM_ENGINE": "transformers" if self.args.cpu_dry_run else "vllm", "HF_HUB_OFFLINE": "1",
               "COMPOUNDRY_ENGINE_OPTIONS": json.dumps({"gpu_memory_utilization": 0.3, "max_model_len": 512,
                                                        "enforce_eager": True, "max_new_tokens": self.args.max_tokens})}
        bentoml = self.gpu_python.parent / "bentoml"
        proc = steps.spawn([str(bentoml), "serve", "bentos.llm.service:LLMService", "--port", str(port),
                            "--host", "127.0.0.1"], self.out / "gpu_check_bento.log", env)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        waited = steps.wait_http(f"{url}/readyz", proc, min(300.0, self.left()), self.out / "gpu_check_bento.log")
        return {"url": url, "ready_s": round(waited, 2), "info": steps.get_json(f"{url}/info", method="POST")}

    def start_gateway(self, platform_python: Path, bento_url: str) -> dict:
        work = self.work / "gateway"
        proc = steps.spawn([str(platform_python), str(ROOT / "bench" / "gpu_check_steps.py"), "hold-gateway",
                            bento_url, str(work)], self.out / "gpu_check_gateway.log", dict(os.environ))
        self.procs.append(proc)
        log = self.out / "gpu_check_gateway.log"
        found = steps.wait_file(work / "gateway.json", proc, min(120.0, self.left()), log)
        return json.loads(found.read_text())

    def load(self, url: str, model: str, key: str | None = None) -> dict:
        a = self.args
        steps.chat_load(url, model, min(a.concurrency, 8), min(a.concurrency, 8), a.max_tokens, key)  # warm-up
        result = steps.chat_load(url, model, a.requests, a.concurrency, a.max_tokens, key)
        if result["errors"]:
            raise RuntimeError(f"{result['errors']} of {a.requests} calls failed: {result['first_errors']}")
        return result

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            steps.stop(proc)


class StepFailed(RuntimeError):
    def __init__(self, step: str, why: str):
        super().__init__(f"{step}: {why}")
        self.step, self.why = step, why


if __name__ == "__main__":
    sys.exit(main())
