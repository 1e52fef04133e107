"""Build a compoundry Bento per engine and the argv that serves it.

Each engine folder (`bentos/embedding`, `bentos/pyfunc`, `bentos/llm`) is one
build context, but all import `bentos/common.py`. `build_bento` therefore
assembles a temporary context holding `bentos/__init__.py`, `bentos/common.py`
and the engine folder, and builds it with the folder's `bentofile.yaml`; the
Bento keeps the same package layout, so imports are identical in the repository
and in a Bento. Packages are not locked (`lock_packages: false`): the build
makes no network calls and takes about a second.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

BENTOS_DIR = Path(__file__).resolve().parent
ENGINE_DIRS = {"sentence-transformers": "embedding", "pyfunc": "pyfunc", "llm": "llm"}
GPU_ENV = "COMPOUNDRY_BENTO_GPU"


def engine_dir(engine: str) -> Path:
    try:
        return BENTOS_DIR / ENGINE_DIRS[engine]
    except KeyError:
        raise ValueError(f"no Bento for engine {engine!r}; expected one of {', '.join(ENGINE_DIRS)}") from None


def prepare_context(engine: str, dest: Path, gpu: bool = False) -> Path:
    """Copy the shared package files and the engine folder into `dest`; returns the bentofile path there."""
    folder = engine_dir(engine)
    pkg = dest / "bentos"
    pkg.mkdir(parents=True, exist_ok=True)
    for name in ("__init__.py", "common.py"):
        shutil.copy2(BENTOS_DIR / name, pkg / name)
    shutil.copytree(folder, pkg / folder.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    bentofile = pkg / folder.name / "bentofile.yaml"
    if gpu and engine == "llm":
        config = yaml.safe_load(bentofile.read_text())
        python = config.setdefault("python", {})
        gpu_reqs = [line.split("#")[0].strip() for line in (folder / "requirements-gpu.txt").read_text().splitlines()]
        # vLLM picks its own CUDA torch; inline the file (BentoML refuses requirements_txt outside the cwd)
        python["packages"] = [p for p in python.get("packages", []) if not p.startswith("torch")] + \
            [r for r in gpu_reqs if r]
        config.setdefault("docker", {})["cuda_version"] = "12.8"
        config.setdefault("labels", {})["accelerator"] = "gpu"
        bentofile.write_text(yaml.safe_dump(config, sort_keys=False))
    return bentofile


def build_bento(engine: str, labels: dict[str, str], bentoml_home: Path | None = None,
                gpu: bool | None = None) -> str:
    """Build the Bento for `engine` into the store under `bentoml_home` (default: BENTOML_HOME); returns its tag."""
    import bentoml
    from bentoml._internal.bento import BentoStore

    if gpu is None:
        gpu = os.environ.get(GPU_ENV, "").lower() in ("1", "true", "yes")
    home = Path(bentoml_home or os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")
    store_dir = home / "bentos"
    store_dir.mkdir(parents=True, exist_ok=True)
    clean_labels = {str(k): str(v) for k, v in (labels or {}).items()}
    with tempfile.TemporaryDirectory(prefix=f"compoundry-bento-{ENGINE_DIRS.get(engine, 'x')}-") as tmp:
        bentofile = prepare_context(engine, Path(tmp), gpu=bool(gpu))
        bento = bentoml.bentos.build_bentofile(
            str(bentofile), build_ctx=tmp, labels=clean_labels, _bento_store=BentoStore(str(store_dir)),
        )
    return str(bento.tag)


def bentoml_executable() -> str:
    """The `bentoml` script of this interpreter's environment (not whatever is first on PATH)."""
    candidate = Path(sys.executable).parent / "bentoml"
    return str(candidate) if candidate.exists() else (shutil.which("bentoml") or "bentoml")


def serve_command(bento_tag: str, port: int, host: str) -> list[str]:
    """argv for `bentoml serve <tag>`; run it with BENTOML_HOME set to the store the tag was built into."""
    return [bentoml_executable(), "serve", bento_tag, "--port", str(port), "--host", host]


if __name__ == "__main__":  # python -m bentos.build <engine> [key=value ...]
    import time

    started = time.perf_counter()
    tag = build_bento(sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:]))
    print(f"{tag} built in {time.perf_counter() - started:.2f}s")
