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


def test_a_busy_api_port_fails_start_up(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = twistd("--api-listen", f"tcp:{port}:interface=127.0.0.1",
                     "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert run.returncode == 1
    failures = [line for line in run.stdout.splitlines() if "start-up failed" in line]
    assert len(failures) == 1 and "Address already in use" in failures[0]
    assert "Traceback" not in run.stdout


def test_a_bad_config_lists_every_problem_before_starting(tmp_path: Path) -> None:
    config = tmp_path / "perund.yaml"
    config.write_text("chain:\n  url: ftp://x\ntimeouts:\n  tx: soon\nextra: 1\n")
    run = twistd("--config", str(config), cwd=tmp_path)
    assert run.returncode != 0
    output = run.stdout + run.stderr
    for name in ("chain.url", "timeouts.tx", "extra"):
        assert name in output
    assert "starting up" not in output
