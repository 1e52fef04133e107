"""`compoundry logs` and `compoundry --version`, run as a user runs them: a subprocess with a clean environment."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [str(Path(sys.executable).parent / "compoundry")]


@pytest.fixture
def project(tmp_path):
    """A config dir whose state dir holds a gateway log and one replica's."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "platform.yaml").write_text(f"state_dir: {tmp_path / 'state'}\n")
    logs = tmp_path / "state" / "logs"
    (logs / "replicas").mkdir(parents=True)
    (logs / "gateway.log").write_text("".join(f"line {i}\n" for i in range(10)))
    (logs / "replicas" / "embedder-v1-0.log").write_text("loading model\nready\n")
    return tmp_path


def run(project, *args, **kwargs) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(project), "COMPOUNDRY_CONFIG_DIR": str(project / "configs")}
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60, **kwargs)


def test_logs_lists_prints_and_names_what_exists(project):
    listed = json.loads(run(project, "logs", "--json").stdout)
    assert {row["name"] for row in listed} == {"gateway", "embedder-v1-0"}
    assert run(project, "logs", "gateway", "-n", "2").stdout == "line 8\nline 9\n"
    assert run(project, "logs", "embedder-v1-0").stdout == "loading model\nready\n"
    unknown = run(project, "logs", "mlflow")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert "no log named 'mlflow'" in unknown.stderr and "gateway" in unknown.stderr


def test_logs_follow_prints_what_is_appended(project):
    env = {"PATH": os.environ["PATH"], "HOME": str(project), "COMPOUNDRY_CONFIG_DIR": str(project / "configs")}
    follower = subprocess.Popen([*CLI, "logs", "gateway", "-n", "0", "-f"], env=env, stdout=subprocess.PIPE,
                                text=True)
    try:
        time.sleep(1.5)  # the CLI starts and seeks to the end
        with (project / "state" / "logs" / "gateway.log").open("a") as log:
            log.write("a new line\n")
        ready, _, _ = select.select([follower.stdout], [], [], 20)  # never hang the suite on a silent CLI
        assert ready and follower.stdout.readline() == "a new line\n"
    finally:
        follower.terminate()
        follower.wait(10)


def test_version(project):
    shown = run(project, "--version")
    assert shown.returncode == 0 and shown.stdout.startswith("compoundry ")
