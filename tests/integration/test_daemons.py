"""Two real `twistd perund` processes on anvil, driven only through JSON-RPC and WebSocket.

Like an outside program: start the daemons, open sessions, open a channel (the proposal is
pushed and accepted), pay, request payments (pushed, accepted and rejected), close
cooperatively (closed pushed to both), close the sessions, restart and see channels restored.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from perund.cli.apiclient import ApiClient, Pushes
from perund.cli.generate import Generated
from tests.node.conftest import two_nodes

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

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "perund", "--config", str(self.config)],
                cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.token_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the daemon did not start:\n"
                                     + self.log.read_text()[-3000:])
            time.sleep(0.1)
        self.api = ApiClient(self.port, self.token_path.read_text().strip())
        self.api.wait_until_up(alive=lambda: self.proc is not None and self.proc.poll() is None)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def request(self, method: str, **params: Any) -> dict[str, Any]:
        return self.api.request(method, **params)

    def call(self, method: str, **params: Any) -> Any:
        return self.api.call(method, **params)

    def socket(self) -> Pushes:
        return self.api.pushes()


@pytest.fixture
def daemons(anvil_setup: Generated, tmp_path: Path) -> Iterator[tuple[Daemon, Daemon]]:
    if not Path(TWISTD).exists():
        pytest.fail(f"{TWISTD} is missing: run `make deps`")
    alice_config, bob_config = two_nodes(anvil_setup)
    alice, bob = Daemon(alice_config, tmp_path), Daemon(bob_config, tmp_path)
    yield alice, bob
    alice.stop()
    bob.stop()
    for daemon in (alice, bob):
        text = daemon.log.read_text()
        assert "Traceback" not in text, text[-4000:]


def in_background(pool: ThreadPoolExecutor, f: Callable[..., Any], *args: Any,
                  **kwargs: Any) -> Future[Any]:
    return pool.submit(f, *args, **kwargs)


@pytest.mark.anvil
@pytest.mark.slow
def test_two_daemons_through_the_api(daemons: tuple[Daemon, Daemon],
                                     anvil_setup: Generated) -> None:
    alice, bob = daemons
    files = {u.name: str(u.session_file) for u in anvil_setup.users}
    a = alice.call("session_open", configFile=files["alice"])["sessionId"]
    b = bob.call("session_open", configFile=files["bob"])["sessionId"]
    pushes = bob.socket()
    alice_pushes = alice.socket()
    try:
        pushes.call("subscribe", sessionId=b, topic="proposals")
        pushes.call("subscribe", sessionId=b, topic="updates")
        alice_pushes.call("subscribe", sessionId=a, topic="updates")
        with ThreadPoolExecutor(2) as pool:
            opening = in_background(pool, alice.call, "channel_open", sessionId=a, peer="bob",
                                    balances={"ETH": {"self": "5", "peer": "1"}})
            proposal = pushes.wait(lambda p: "proposalId" in p)
            assert proposal["peer"] == "alice"
            assert proposal["balances"] == {"ETH": {"self": "1", "peer": "5"}}
            bob.call("channel_respondProposal", sessionId=b, proposalId=proposal["proposalId"],
                     accept=True)
            channel = opening.result(120)
            cid = channel["channelId"]
            assert channel["phase"] == "open"

            paid = alice.call("channel_send", sessionId=a, channelId=cid,
                              payments=[{"currency": "ETH", "payee": "bob", "amount": "0.5"}])
            assert paid["balances"] == {"ETH": {"self": "4.5", "peer": "1.5"}}

            # A payment request: pushed to bob, accepted.
            asking = in_background(pool, alice.call, "channel_send", sessionId=a,
                                   channelId=cid, payments=[
                                       {"currency": "ETH", "payee": "self", "amount": "0.25"}])
            update = pushes.wait(lambda p: p.get("type") == "open")
            assert update["kind"] == "request"
            bob.call("channel_respondUpdate", sessionId=b, channelId=cid,
                     updateId=update["updateId"], accept=True)
            assert asking.result(60)["balances"] == {"ETH": {"self": "4.75", "peer": "1.25"}}

            # Another request, rejected by bob: alice gets PeerRejected (102).
            asking = in_background(pool, alice.request, "channel_send", sessionId=a,
                                   channelId=cid, payments=[
                                       {"currency": "ETH", "payee": "self", "amount": "1"}])
            update = pushes.wait(lambda p: p.get("type") == "open")
            bob.call("channel_respondUpdate", sessionId=b, channelId=cid,
                     updateId=update["updateId"], accept=False)
            assert asking.result(60)["error"]["code"] == 102

            # A second channel stays open across the restart.
            opening = in_background(pool, alice.call, "channel_open", sessionId=a, peer="bob",
                                    balances={"ETH": {"self": "1", "peer": "0"}})
            proposal = pushes.wait(lambda p: "proposalId" in p)
            bob.call("channel_respondProposal", sessionId=b, proposalId=proposal["proposalId"],
                     accept=True)
            kept = opening.result(120)["channelId"]

            # Cooperative close: the final update is pushed to bob, closed to both.
            closing = in_background(pool, alice.call, "channel_close", sessionId=a,
                                    channelId=cid)
            final = pushes.wait(lambda p: p.get("type") == "final")
            bob.call("channel_respondUpdate", sessionId=b, channelId=cid,
                     updateId=final["updateId"], accept=True)
            closed = closing.result(120)
            assert closed["phase"] == "closed"
            pushes.wait(lambda p: p.get("type") == "closed" and p["channelId"] == cid)
            alice_pushes.wait(lambda p: p.get("type") == "closed" and p["channelId"] == cid)
    finally:
        pushes.close()
        alice_pushes.close()

    refused = alice.request("session_close", sessionId=a, force=False)
    assert refused["error"]["code"] == 204
    alice.call("session_close", sessionId=a, force=True)
    bob.call("session_close", sessionId=b, force=True)
    for daemon in (alice, bob):
        daemon.stop()
        daemon.start()
    a = alice.call("session_open", configFile=files["alice"])
    b = bob.call("session_open", configFile=files["bob"])
    assert [c["channelId"] for c in a["restoredChannels"]] == [kept]
    assert [c["channelId"] for c in b["restoredChannels"]] == [kept]
    again = alice.call("channel_send", sessionId=a["sessionId"], channelId=kept,
                       payments=[{"currency": "ETH", "payee": "bob", "amount": "0.1"}])
    assert again["balances"] == {"ETH": {"self": "0.9", "peer": "0.1"}}


