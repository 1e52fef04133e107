"""Listings stay readable in an 80-column terminal: a block per row instead of a table cut to `dialo…`.
Run as a user runs them: the CLI in a subprocess with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from compoundry.store import DeploymentStatus, PlatformStore

CLI = str(Path(sys.executable).parent / "compoundry")
DEPLOYMENT = "compoundry-dialogue-llm-v12-5f2a9c"


@pytest.fixture
def project(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "platform.yaml").write_text(f"state_dir: {tmp_path / 'state'}\n")
    (tmp_path / "state").mkdir()
    store = PlatformStore(f"sqlite:///{tmp_path / 'state' / 'platform.db'}")
    store.create_schema()
    store.add_deployment(DEPLOYMENT, "dialogue-llm", "compoundry-dialogue-llm", "12", "llm")
    store.add_replica(f"{DEPLOYMENT}-r0", DEPLOYMENT, "http://127.0.0.1:43117", None, DeploymentStatus.READY)
    store.close()
    return tmp_path


def listing(project, columns: int, *args) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": str(project), "COLUMNS": str(columns),
           "COMPOUNDRY_CONFIG_DIR": str(project / "configs")}
    done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_narrow_terminal_gets_every_value_whole(project):
    narrow = listing(project, 80, "deployments")
    assert DEPLOYMENT in narrow and "dialogue-llm" in narrow and "http://127.0.0.1:43117" in narrow
    assert "…" not in narrow and all(len(line) <= 80 for line in narrow.splitlines())


def test_a_wide_terminal_gets_the_table(project):
    wide = listing(project, 250, "deployments")
    assert "┃" in wide and DEPLOYMENT in wide
