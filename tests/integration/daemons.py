"""Real `twistd perund` processes for the tests that drive a node as a user would."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from perund.chain.anvil import free_port
from perund.cli.apiclient import ApiClient, ApiError, Pushes
from perund.cli.generate import Generated, generate
from perund.errors import Internal

TWISTD = str(Path(sys.executable).with_name("twistd"))


class Daemon:
    """One `twistd -n perund` process, reached through the API client."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.config, self.workdir = config, workdir
        node = yaml.safe_load(config.read_text())
        self.port = int(node["api"]["listen"].split(":")[1])
        self.token_path = config.parent / node["data_dir"] / "api.token"
        self.log = workdir / f"{config.stem}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, *options: str) -> None:
        """Start (again), with extra `twistd perund` options, and wait until the API answers."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "perund", "--config", str(self.config), *options],
                cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.token_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the daemon did not start:\n"
                                     + self.log.read_text()[-3000:])
            time.sleep(0.1)
        self.api = ApiClient(self.port, self.token_path.read_text().strip())
        self.api.wait_until_up(alive=lambda: self.proc is not None and self.proc.poll() is None)

    def wait_for_sessions(self, count: int, timeout: float = 30.0) -> None:
        """Until the node has opened `count` sessions again by itself (after a restart)."""
        deadline = time.monotonic() + timeout
        while len(self.call("session_list")) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the node did not open {count} sessions again:\n"
                                     + self.log.read_text()[-3000:])
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def kill(self) -> None:
        """SIGKILL: the node vanishes without a word to anyone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def request(self, method: str, **params: Any) -> dict[str, Any]:
        return self.api.request(method, **params)

    def call(self, method: str, **params: Any) -> Any:
        try:
            return self.api.call(method, **params)
        except ApiError as exc:
            if exc.code == Internal.code:
                # The client is told nothing of a bug; its traceback is in the node's log.
                raise AssertionError(f"{exc}; the node's log ends:\n"
                                     + self.log.read_text()[-4000:]) from exc
            raise

    def socket(self) -> Pushes:
        return self.api.pushes()


def assert_clean_log(daemon: Daemon) -> None:
    """A node that logged a traceback hit a bug, whatever the test saw."""
    text = daemon.log.read_text()
    assert "Traceback" not in text, text[-4000:]


@contextmanager
def running(*configs: Path, workdir: Path) -> Iterator[tuple[Daemon, ...]]:
    """One daemon per node config; stopped afterwards, their logs checked for tracebacks."""
    if not Path(TWISTD).exists():
        pytest.fail(f"{TWISTD} is missing: run `make deps`")
    daemons: list[Daemon] = []
    try:
        for config in configs:
            daemons.append(Daemon(config, workdir))
        yield tuple(daemons)
    finally:
        for daemon in daemons:
            daemon.stop()
    for daemon in daemons:
        assert_clean_log(daemon)


def generated(folder: Path) -> Generated:
    """`perund generate` output for one node on its embedded chain, on free ports."""
    return generate(folder, api_port=free_port(), comm_ports=(free_port(), free_port()))


def open_channel(node: Daemon, proposer: str, responder: str, ours: str, theirs: str,
                 peer: str = "bob", proposer_node: Daemon | None = None) -> str:
    """A channel between two sessions: `proposer` (a session ID, on `proposer_node` or `node`)
    proposes it to `peer`, whose session `responder` on `node` accepts the pushed proposal; its
    ID, once funded."""
    pushes = node.socket()
    try:
        pushes.call("subscribe", sessionId=responder, topic="proposals")
        with ThreadPoolExecutor(1) as pool:
            opening = pool.submit((proposer_node or node).call, "channel_open",
                                  sessionId=proposer, peer=peer,
                                  balances={"ETH": {"self": ours, "peer": theirs}})
            proposal = pushes.wait(lambda p: "proposalId" in p)
            node.call("channel_respondProposal", sessionId=responder,
                      proposalId=proposal["proposalId"], accept=True)
            channel: str = opening.result(120)["channelId"]
            return channel
    finally:
        pushes.close()
