"""The layout's rules (docs/architecture.md), checked: layers and forbidden imports, a pure core,
a gateway that does not load the control plane's libraries, one meaning per module name, no silent imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "compoundry"
OWN = ("compoundry", "bentos")


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _imported(tree: ast.AST) -> list[tuple[str, int]]:
    """Every absolute import in a module, at any depth (function-level imports count)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


def test_the_import_contracts_hold():
    """pyproject.toml [tool.importlinter]: layers, a gateway without MLflow/Prefect, a pure core, no cycles."""
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_core_imports_only_the_standard_library_numpy_and_scipy():
    allowed = set(sys.stdlib_module_names) | {"numpy", "scipy", "compoundry"}
    for path in _modules(PACKAGE / "core"):
        for name, line in _imported(ast.parse(path.read_text())):
            top = name.split(".")[0]
            assert top in allowed, f"{path.relative_to(ROOT)}:{line} imports {name}"
            if top == "compoundry":
                assert name.startswith("compoundry.core"), f"{path.relative_to(ROOT)}:{line} imports {name}"


@pytest.mark.parametrize("module", ["compoundry.gateway.app", "compoundry.platform.gateway_process"])
def test_starting_a_gateway_loads_neither_mlflow_nor_prefect(module):
    """The request path's process stays small and starts fast; the control API imports Prefect on first use."""
    code = f"import sys, {module}; print(sorted(m for m in ('mlflow', 'prefect', 'bentoml') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


def test_no_two_modules_share_a_file_name():
    names = Counter(p.name for p in _modules(PACKAGE) if p.name != "__init__.py")
    assert [name for name, count in names.items() if count > 1] == []


def test_own_imports_are_never_wrapped_in_an_import_error_handler():
    """A broken import of our own must fail loudly; only optional extras may be caught (with install advice)."""
    for path in _modules(PACKAGE) + _modules(ROOT / "bentos"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Try):
                continue
            caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
            if not caught & {"ImportError", "ModuleNotFoundError", "(ImportError, ModuleNotFoundError)"}:
                continue
            own = [name for stmt in node.body for name, _ in _imported(stmt) if name.split(".")[0] in OWN]
            assert not own, f"{path.relative_to(ROOT)}:{node.lineno} catches ImportError around {own}"
