"""The supervisor's pure decisions (start order, stale pid files, log tails) and its start/stop on tiny processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from compoundry.host.processes import log_tail, process_identity, stop_process_group
from compoundry.platform.post_start import POST_START_HOOKS, PostStartHook
from compoundry.platform.services import ServiceSpec, platform_services
from compoundry.platform.supervisor import (
    PlatformError,
    Supervisor,
    cmdline_matches,
    pid_is_stale,
    start_levels,
)

VENV = "/srv/app/.venv/bin"


def spec(name: str, *depends_on: str, argv=None, health=None, timeout_s: float = 10) -> ServiceSpec:
    return ServiceSpec(name=name, argv=tuple(argv or (sys.executable, "-c", "pass")), env=dict(os.environ),
                       health_url=None, start_timeout_s=timeout_s, depends_on=depends_on,
                       health=health or (lambda pid: True))


PLATFORM = {s.name: s for s in (spec("mlflow"), spec("prefect"), spec("flows", "mlflow", "prefect"),
                                spec("gateway", "mlflow", "prefect"))}


# --- start order ----------------------------------------------------------------------
def test_servers_start_together_then_their_dependents():
    assert start_levels(PLATFORM) == [["mlflow", "prefect"], ["flows", "gateway"]]


@pytest.mark.parametrize("only, expected", [
    (["mlflow", "prefect"], [["mlflow", "prefect"]]),
    (["prefect"], [["prefect"]]),
    (["gateway"], [["mlflow", "prefect"], ["gateway"]]),  # dependencies come along
    (["flows", "gateway"], [["mlflow", "prefect"], ["flows", "gateway"]]),
])
def test_only_starts_the_named_services_and_their_dependencies(only, expected):
    assert start_levels(PLATFORM, only) == expected


def test_unknown_service_is_a_clear_error():
    with pytest.raises(PlatformError, match="unknown service"):
        start_levels(PLATFORM, ["mlflw"])


def test_real_specs_have_the_documented_order(tmp_path, monkeypatch):
    from compoundry.config.settings import PlatformSettings

    monkeypatch.setenv("COMPOUNDRY_STATE_DIR", str(tmp_path))
    specs = platform_services(PlatformSettings.load())
    assert start_levels(specs) == [["mlflow", "prefect"], ["flows", "gateway"]]
    mlflow = specs["mlflow"]
    assert mlflow.argv[1:2] == ("server",) and "--workers" in mlflow.argv
    assert mlflow.env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] == "https,http"
    assert mlflow.env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] == "true"
    assert not (tmp_path / "mlflow_fernet_key").exists()  # building specs (status, down) creates nothing
    key = mlflow.start_env()["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"]
    assert key == (tmp_path / "mlflow_fernet_key").read_text().strip() == mlflow.start_env()[
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"]
    assert specs["prefect"].env["PREFECT_HOME"] == str(tmp_path / "prefect")


# --- stale pid files ------------------------------------------------------------------------
@pytest.mark.parametrize("expected, cmdline, matches", [
    # console scripts run as `python <script> ...`
    ((f"{VENV}/mlflow", "server", "--host"), [f"{VENV}/python3.11", f"{VENV}/mlflow", "server", "--host", "x"], True),
    ((f"{VENV}/python", "-m", "compoundry.flows.serve"), [f"{VENV}/python3.11", "-m", "compoundry.flows.serve"], True),
    ((f"{VENV}/python", "-m", "compoundry.flows.serve"), [f"{VENV}/python", "-m", "compoundry.platform.gateway_process"], False),
    ((f"{VENV}/mlflow", "server"), [f"{VENV}/python3.11", f"{VENV}/prefect", "server", "start"], False),
    ((f"{VENV}/mlflow", "server"), ["/usr/sbin/sshd", "-D"], False),
])
def test_cmdline_must_run_the_expected_command(expected, cmdline, matches):
    assert cmdline_matches(expected, cmdline) is matches


ARGV = (f"{VENV}/prefect", "server", "start")
CMDLINE = [f"{VENV}/python3.11", f"{VENV}/prefect", "server", "start", "--port", "4200"]


@pytest.mark.parametrize("cmdline, started_at, written_at, stale", [
    (None, None, 100.0, True),                   # process gone (or a zombie)
    (CMDLINE, 99.5, 100.0, False),               # started, then the pid file was written
    (CMDLINE, 101.0, 100.0, False),              # within the clock slack
    (CMDLINE, 500.0, 100.0, True),               # pid reused by a later process running the same thing
    (["/bin/bash"], 99.5, 100.0, True),          # pid reused by something else
])
def test_stale_pid_decision(cmdline, started_at, written_at, stale):
    assert pid_is_stale(ARGV, cmdline, started_at, written_at) is stale


def settings_in(tmp_path: Path):
    return SimpleNamespace(state_dir=tmp_path, ensure_state_dir=lambda: tmp_path, logs_dir=tmp_path / "logs",
                           pids_dir=tmp_path / "pids", database_url=f"sqlite:///{tmp_path / 'missing.db'}")


def test_pid_file_of_an_unrelated_or_dead_process_is_removed(tmp_path):
    supervisor = Supervisor(settings_in(tmp_path), specs={"svc": spec("svc", argv=("/opt/nothing/svc", "run"))},
                            hooks=())
    supervisor.settings.pids_dir.mkdir(parents=True)
    pid_file = supervisor.pid_file("svc")
    for pid in (os.getpid(), _dead_pid()):
        pid_file.write_text(f"{pid}\n")
        assert supervisor.running_pid(supervisor.specs["svc"]) is None
        assert not pid_file.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_log_tail_shows_only_this_runs_last_lines(tmp_path):
    log = tmp_path / "svc.log"
    log.write_text("old run\n")
    offset = log.stat().st_size
    with open(log, "a") as f:
        f.writelines(f"line {i}\n" for i in range(50))
    tail = log_tail(log, offset, lines=30).splitlines()
    assert tail[0] == "line 20" and tail[-1] == "line 49" and len(tail) == 30
    assert log_tail(tmp_path / "missing.log") == "(no log)"


# --- start/stop with tiny processes ------------------------------------------------------------
SLEEPER = (sys.executable, "-c", "import subprocess, sys, time; "
           "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")


def test_up_then_down_stops_the_whole_process_group(tmp_path):
    supervisor = Supervisor(settings_in(tmp_path), specs={"svc": spec("svc", argv=SLEEPER)}, hooks=())
    supervisor.up()
    pid = int(supervisor.pid_file("svc").read_text())
    assert os.getpgid(pid) == pid  # its own process group
    time.sleep(0.5)
    import psutil

    family = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    assert len(family) == 2
    [status] = supervisor.status()
    assert status.alive and status.healthy and status.pid == pid
    supervisor.up()  # already running: kept, not started twice
    assert int(supervisor.pid_file("svc").read_text()) == pid
    supervisor.down()
    assert not supervisor.pid_file("svc").exists()
    assert all(process_identity(p.pid) is None for p in family)


def test_a_service_that_exits_fails_up_with_its_log_tail(tmp_path):
    crash = (sys.executable, "-c", "import sys; print('cannot bind port', flush=True); sys.exit(3)")
    supervisor = Supervisor(settings_in(tmp_path), specs={"svc": spec("svc", argv=crash, health=lambda pid: False)},
                            hooks=())
    with pytest.raises(PlatformError, match="svc exited during start-up") as err:
        supervisor.up()
    assert "cannot bind port" in str(err.value)
    assert not supervisor.pid_file("svc").exists()


def test_post_start_hooks_run_in_order_skip_when_disabled_and_report_errors(tmp_path):
    ran = []

    def broken(settings):
        raise RuntimeError("mlflow said no")

    hooks = (PostStartHook(lambda settings: ran.append("first"), ("svc",), "first"),
             PostStartHook(broken, ("svc",), "broken"),
             PostStartHook(lambda settings: ran.append("off"), ("svc",), "disabled", enabled=lambda settings: False),
             PostStartHook(lambda settings: ran.append("after"), ("svc",), "after the failure"),
             PostStartHook(lambda settings: ran.append("other"), ("other",), "not selected"))
    events = []
    supervisor = Supervisor(settings_in(tmp_path), specs={"svc": spec("svc", argv=SLEEPER)}, hooks=hooks)
    try:
        with pytest.raises(PlatformError, match="broken .*mlflow said no"):
            supervisor.up(progress=lambda name, event, detail: events.append((name, event)))
    finally:
        supervisor.down()
    assert ran == ["first", "after"]  # a failure does not stop the steps after it
    assert ("broken", "hook-failed") in events and ("disabled", "hook-skipped") in events
    assert not any(name == "not selected" for name, _ in events)


def test_the_platform_post_start_hooks_are_functions_not_module_names():
    """A broken import fails at start-up, loudly; it never silently skips a step of `compoundry up`."""
    assert [h.title for h in POST_START_HOOKS] == ["local admin API key", "MLflow webhook", "restore routed replicas"]
    assert all(callable(h.run) for h in POST_START_HOOKS)


# --- CLI conventions --------------------------------------------------------------------------
def test_cli_exit_codes_and_no_tracebacks(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from compoundry import cli
    from compoundry.platform import supervisor as supervisor_module

    monkeypatch.setenv("COMPOUNDRY_STATE_DIR", str(tmp_path))
    runner = CliRunner()
    assert runner.invoke(cli.app, ["up", "--only", "nope"]).exit_code == 2
    assert runner.invoke(cli.app, ["status"]).exit_code == 1  # nothing runs
    crash = (sys.executable, "-c", "import sys; print('[red] bad [/bold] markup', flush=True); sys.exit(3)")
    monkeypatch.setattr(supervisor_module, "platform_services",
                        lambda settings: {"svc": spec("svc", argv=crash, health=lambda pid: False)})
    result = runner.invoke(cli.app, ["up"])
    assert result.exit_code == 1, result.output
    assert "svc exited during start-up" in result.output and "[red] bad [/bold] markup" in result.output
    assert "Traceback" not in result.output
    assert runner.invoke(cli.app, ["down"]).exit_code == 0


def test_down_stops_replicas_recorded_in_the_platform_db(tmp_path):
    from compoundry.store import PlatformStore

    settings = settings_in(tmp_path)
    settings.database_url = f"sqlite:///{tmp_path / 'platform.db'}"
    store = PlatformStore(settings.database_url)
    store.create_schema()
    store.add_deployment("d1", "embedder", "minilm", "1", "sentence-transformers")
    # argv[1] "bentoml" makes it look like a replica; the unrelated pid (this test) must not be signalled
    replica = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "bentoml"],
                               start_new_session=True)
    store.add_replica("d1-r0", "d1", "http://127.0.0.1:9100", replica.pid)
    store.add_replica("d1-r1", "d1", "http://127.0.0.1:9101", os.getpid())
    events = []
    Supervisor(settings, specs={}, hooks=()).down(progress=lambda *e: events.append(e[:2]))
    assert replica.wait(timeout=5) is not None
    assert ("replica d1-r0", "stopped") in events and ("replica d1-r1", "stopping") not in events
    with store.engine.connect() as conn:
        statuses = dict(conn.exec_driver_sql("select id, status from replicas").fetchall())
    assert statuses == {"d1-r0": "stopped", "d1-r1": "stopped"}


# --- orphans: replica processes whose parent died -----------------------------------------------
def _replica_like(state_dir: Path, name: str, orphaned: bool) -> int:
    """A process with `name` in its command line and the platform's state dir in its environment; orphaned:
    its parent shell exits at once, so init adopts it (as a Bento worker whose `bentoml serve` was killed)."""
    env = {**os.environ, "COMPOUNDRY_STATE_DIR": str(state_dir)}
    sleeper = f"{sys.executable} -c 'import time; time.sleep(60)' {name}"
    if orphaned:
        out = subprocess.run(["sh", "-c", f"{sleeper} > /dev/null 2>&1 & echo $!"], env=env, capture_output=True,
                             text=True, check=True)
        return int(out.stdout.strip())
    return subprocess.Popen(sleeper, shell=True, env=env, start_new_session=True).pid


def _alive(pid: int) -> bool:
    return process_identity(pid) is not None


def test_down_stops_every_replica_process_of_this_platform_and_only_those(tmp_path):
    ours = _replica_like(tmp_path, "_bentoml_impl.worker.service", orphaned=True)
    theirs = _replica_like(tmp_path / "another-platform", "_bentoml_impl.worker.service", orphaned=True)
    unrelated = _replica_like(tmp_path, "not-a-replica", orphaned=True)
    try:
        events = []
        Supervisor(settings_in(tmp_path), specs={}, hooks=()).down(progress=lambda *e: events.append(e))
        wait = time.monotonic() + 10
        while _alive(ours) and time.monotonic() < wait:
            time.sleep(0.1)
        assert not _alive(ours) and _alive(theirs) and _alive(unrelated)
        assert any("stray replica" in detail for _, _, detail in events)
    finally:
        for pid in (theirs, unrelated):
            stop_process_group(pid, grace_s=1)


def test_up_stops_orphaned_workers_before_starting_and_keeps_live_replicas(tmp_path):
    orphan = _replica_like(tmp_path, "_bentoml_impl.worker.service", orphaned=True)
    replica = _replica_like(tmp_path, "bentoml serve", orphaned=False)  # its parent (this test) lives
    supervisor = Supervisor(settings_in(tmp_path), specs={"svc": spec("svc", argv=SLEEPER)}, hooks=())
    try:
        supervisor.up()
        wait = time.monotonic() + 10
        while _alive(orphan) and time.monotonic() < wait:
            time.sleep(0.1)
        assert not _alive(orphan) and _alive(replica)
    finally:
        supervisor.down()
        stop_process_group(replica, grace_s=1)
