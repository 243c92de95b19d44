"""`twistd perund` start-up failures: one clear line and a non-zero exit."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

TWISTD = str(Path(sys.executable).with_name("twistd"))


def twistd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TWISTD, "-n", "--pidfile=", "perund", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_a_busy_api_port_fails_start_up_and_leaves_no_pid_file(tmp_path: Path) -> None:
    config = tmp_path / "perund.yaml"
    config.write_text("data_dir: data\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run([TWISTD, "-n", "perund", "--config", str(config), "--api-listen",
                              f"tcp:{port}:interface=127.0.0.1"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    # Found before anything starts (and before a daemon would fork): one line on stderr.
    assert run.stderr == (f"perund: api.listen tcp:{port}:interface=127.0.0.1: the port is in "
                          "use by another program\n")
    assert "Traceback" not in run.stdout
    # twistd's pid file is gone: a stale one could block the next start (its PID reused).
    assert not (tmp_path / "twistd.pid").exists()


def test_a_start_up_failure_after_the_checks_leaves_no_pid_file(tmp_path: Path) -> None:
    config = tmp_path / "perund.yaml"
    config.write_text("data_dir: data\n")
    (tmp_path / "data").write_text("a file where the data folder goes\n")
    run = subprocess.run([TWISTD, "-n", "perund", "--config", str(config), "--api-listen",
                          "tcp:0:interface=127.0.0.1"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    failures = [line for line in run.stdout.splitlines() if "start-up failed" in line]
    assert len(failures) == 1 and "is not a folder" in failures[0]
    assert "Traceback" not in run.stdout
    assert not (tmp_path / "twistd.pid").exists()


def test_a_bad_config_is_one_line_listing_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "perund.yaml"
    config.write_text("chain:\n  url: ftp://x\ntimeouts:\n  tx: soon\nextra: 1\n")
    run = twistd("--config", str(config), cwd=tmp_path)
    assert run.returncode == 1 and run.stdout == ""
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"perund: invalid node config {config}: ")
    for name in ("chain.url", "timeouts.tx", "extra"):
        assert name in line
    config.write_text("chain:\n  url: [nowhere\n")
    run = twistd("--config", str(config), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == f"perund: node config {config} is not valid YAML: line 3, column 1: " \
                         "expected ',' or ']', but got '<stream end>'\n"


def test_no_config_is_one_line_saying_what_to_pass(tmp_path: Path) -> None:
    run = twistd(cwd=tmp_path)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith("perund: no node config: give --config FILE")
    assert not (tmp_path / "data").exists()


def test_a_failure_before_the_reactor_runs_ends_the_process_with_one_line(tmp_path: Path) -> None:
    """A data_dir that is a file fails inside the service's start, before twistd runs the
    reactor; the process must still end (it used to live on, serving nothing)."""
    (tmp_path / "data").write_text("not a folder\n")
    config = tmp_path / "perund.yaml"
    # Any free API port: a node of the user's own may hold the default one.
    config.write_text("data_dir: data\napi: {listen: 'tcp:0:interface=127.0.0.1'}\n")
    run = twistd("--config", str(config), cwd=tmp_path)
    assert run.returncode == 1
    (line,) = [line for line in run.stdout.splitlines() if "start-up failed" in line]
    assert line.endswith(f"start-up failed: data_dir {tmp_path / 'data'} is not a folder")
    assert "Traceback" not in run.stdout
