"""Real `twistd perund` processes for the tests that drive a node as a user would."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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

    def start(self, *options: str, address_space: int | None = None) -> None:
        """Start (again), with extra `twistd perund` options, and wait until the API answers.
        `address_space` caps the process's memory (bytes): a test of an attack on the node's
        memory must not take the machine's when the node gives in."""

        def limit() -> None:
            if address_space is not None:
                resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "perund", "--config", str(self.config), *options],
                cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=limit if address_space is not None else None)
        try:
            deadline = time.monotonic() + 60
            while not self.token_path.exists():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("the daemon did not start:\n"
                                         + self.log.read_text()[-3000:])
                time.sleep(0.1)
            self.api = ApiClient(self.port, self.token_path.read_text().strip())
            self.api.wait_until_up(
                alive=lambda: self.proc is not None and self.proc.poll() is None)
        except BaseException:
            self.kill()  # a start that failed leaves no daemon behind
            raise

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


class Users:
    """One daemon per user name, each with the user's session open, and the calls the tests
    make as a user (by name)."""

    def __init__(self, daemons: dict[str, Daemon], session_files: dict[str, Path]) -> None:
        self.daemons = daemons
        self.session_files = session_files
        self.sessions: dict[str, str] = {}
        self.pool = ThreadPoolExecutor(4)
        for name in daemons:
            self.open_session(name)

    def open_session(self, name: str) -> dict[str, Any]:
        opened: dict[str, Any] = self.daemons[name].call(
            "session_open", configFile=str(self.session_files[name]))
        self.sessions[name] = opened["sessionId"]
        return opened

    def restart(self, name: str) -> None:
        """Start the user's (stopped or killed) daemon again; it opens the session by itself."""
        self.daemons[name].start()
        self.reattach(name)

    def reattach(self, name: str) -> None:
        """After a restart: the node opened the session itself; learn its new ID (from
        session_list, and the same from session_open's 202)."""
        config = str(self.session_files[name])
        # (session_open waits for the node's own opening, should it still be under way.)
        answer = self.daemons[name].request("session_open", configFile=config)
        assert answer["error"]["code"] == 202, answer  # open already
        (listed,) = self.daemons[name].call("session_list")
        assert listed["configFile"] == config
        assert answer["error"]["data"]["id"] == listed["sessionId"]
        self.sessions[name] = listed["sessionId"]

    def call(self, name: str, method: str, **params: Any) -> Any:
        return self.daemons[name].call(method, sessionId=self.sessions[name], **params)

    def request(self, name: str, method: str, **params: Any) -> dict[str, Any]:
        return self.daemons[name].request(method, sessionId=self.sessions[name], **params)

    def background(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        return self.pool.submit(f, *args, **kwargs)

    @contextmanager
    def pushes(self, name: str) -> Iterator[Pushes]:
        """A WebSocket subscribed to the user's proposals and updates."""
        socket = self.daemons[name].socket()
        try:
            for topic in ("proposals", "updates"):
                socket.call("subscribe", sessionId=self.sessions[name], topic=topic)
            yield socket
        finally:
            socket.close()

    def channel(self, name: str, channel_id: str) -> dict[str, Any]:
        info: dict[str, Any] = self.call(name, "channel_get", channelId=channel_id)
        return info

    def phase(self, name: str, channel_id: str) -> str:
        return str(self.channel(name, channel_id)["phase"])

    def on_chain_version(self, name: str, channel_id: str) -> int | None:
        """The version registered on-chain as the user's node knows it, if any."""
        on_chain = self.channel(name, channel_id).get("onChain")
        return None if on_chain is None else int(on_chain["version"])

    def close_together(self, name: str, peer: str, channel_id: str) -> dict[str, Any]:
        """`name` closes the channel cooperatively; `peer`'s user accepts the final state."""
        with self.pushes(peer) as pushes:
            closing = self.background(self.call, name, "channel_close", channelId=channel_id)
            final = pushes.wait(lambda p: p.get("type") == "final"
                                and p.get("channelId") == channel_id)
            self.call(peer, "channel_respondUpdate", channelId=channel_id,
                      updateId=final["updateId"], accept=True)
            info: dict[str, Any] = closing.result(60)
        assert info["phase"] == "closed", info
        return info

    def stop(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for daemon in self.daemons.values():
            daemon.stop()
