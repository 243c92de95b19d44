"""Disputes end to end (issue #6): two real `twistd perund` daemons on anvil, driven through the
API, against a peer that cheats, vanishes, never funds or refuses to close.

The cheating peer is a test script holding bob's keys: it keeps a copy of bob's store from an
earlier state (a restored backup, the classic way to cheat a channel) and registers that old
state on the contract directly. Time moves with anvil's `evm_increaseTime` / `evm_mine`. Every
test checks the payouts of the contract's `PaidOut` events to the wei.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor

from perund.chain.account import Account
from perund.chain.anvil import Anvil, rpc_call
from perund.chain.backend import ChainBackend
from perund.channel.records import Channel
from perund.channel.types import ChannelID, to_address
from perund.cli.apiclient import Pushes
from perund.cli.generate import Generated, anvil_dev_key
from perund.storage.store import SessionStore
from tests.integration.daemons import Daemon, assert_clean_log
from tests.node.conftest import two_nodes

ETHER = 10**18
CHALLENGE = 60
"""The channels' challenge duration in seconds (the nodes' minimum is 3 * (poll + tx timeout))."""


def wei(amount: str) -> int:
    return int(Decimal(amount) * ETHER)


def until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll `condition` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class World:
    """Alice's and bob's daemons with open sessions, the chain, and the helpers the tests share."""

    def __init__(self, setup: Generated, workdir: Path, anvil: Anvil) -> None:
        self.anvil = anvil
        self.setup = setup
        alice_config, bob_config = two_nodes(setup)
        for config in (alice_config, bob_config):
            node = yaml.safe_load(config.read_text())
            node["chain"]["poll_interval"] = "200ms"
            node["timeouts"] = {"response": "8s", "tx": "10s", "funding": "8s",
                                "peer_dial": "2s", "peer_request": "5s"}
            config.write_text(yaml.safe_dump(node))
        self.users = {u.name: u for u in setup.users}
        self.alice = Daemon(alice_config, workdir)
        self.bob = Daemon(bob_config, workdir)
        self.daemons = (self.alice, self.bob)
        self.sessions: dict[str, str] = {}
        self.open_session("alice")
        self.open_session("bob")
        self.pool = ThreadPoolExecutor(4)
        node = yaml.safe_load(alice_config.read_text())
        self.adjudicator = to_address(node["chain"]["adjudicator"])
        self.chain = ChainBackend(reactor, url=anvil.url, chain_id=anvil.chain_id,
                                  adjudicator=self.adjudicator)
        self.chain.startService()
        self._connected = False

    def daemon(self, name: str) -> Daemon:
        return self.alice if name == "alice" else self.bob

    def open_session(self, name: str) -> dict[str, Any]:
        opened: dict[str, Any] = self.daemon(name).call(
            "session_open", configFile=str(self.users[name].session_file))
        self.sessions[name] = opened["sessionId"]
        return opened

    def reattach(self, name: str) -> None:
        """After a restart: the node opened the session itself; learn its new ID (from
        session_list, and the same from session_open's 202)."""
        config = str(self.users[name].session_file)
        # (session_open waits for the node's own opening, should it still be under way.)
        answer = self.daemon(name).request("session_open", configFile=config)
        assert answer["error"]["code"] == 202, answer  # open already
        (listed,) = self.daemon(name).call("session_list")
        assert listed["configFile"] == config and listed["openChannels"] == 1
        assert answer["error"]["data"]["id"] == listed["sessionId"]
        self.sessions[name] = listed["sessionId"]

    def call(self, name: str, method: str, **params: Any) -> Any:
        return self.daemon(name).call(method, sessionId=self.sessions[name], **params)

    def request(self, name: str, method: str, **params: Any) -> dict[str, Any]:
        return self.daemon(name).request(method, sessionId=self.sessions[name], **params)

    def background(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        return self.pool.submit(f, *args, **kwargs)

    @contextmanager
    def pushes(self, name: str) -> Iterator[Pushes]:
        """A WebSocket subscribed to the user's proposals and updates."""
        socket = self.daemon(name).socket()
        try:
            for topic in ("proposals", "updates"):
                socket.call("subscribe", sessionId=self.sessions[name], topic=topic)
            yield socket
        finally:
            socket.close()

    def open_channel(self, alice: str, bob: str) -> str:
        """Alice proposes a channel with these deposits, bob's user accepts; its ID."""
        with self.pushes("bob") as pushes:
            opening = self.background(self.call, "alice", "channel_open", peer="bob",
                                      balances={"ETH": {"self": alice, "peer": bob}},
                                      challengeDuration=CHALLENGE)
            proposal = pushes.wait(lambda p: "proposalId" in p)
            self.call("bob", "channel_respondProposal", proposalId=proposal["proposalId"],
                      accept=True)
            channel = opening.result(120)
        assert channel["phase"] == "open"
        return str(channel["channelId"])

    def pay(self, payer: str, channel_id: str, amount: str) -> dict[str, Any]:
        payee = "bob" if payer == "alice" else "alice"
        info: dict[str, Any] = self.call(payer, "channel_send", channelId=channel_id, payments=[
            {"currency": "ETH", "payee": payee, "amount": amount}])
        return info

    def channel(self, name: str, channel_id: str) -> dict[str, Any]:
        info: dict[str, Any] = self.call(name, "channel_get", channelId=channel_id)
        return info

    def backup(self, name: str, workdir: Path) -> Path:
        """A copy of the user's store as it is now (the cheater's old backup)."""
        copy = workdir / f"{name}-backup"
        shutil.copytree(self.users[name].session_file.parent / "db", copy)
        return copy

    def travel(self, seconds: int) -> None:
        """Move the chain's clock forward and mine a block there."""
        rpc_call(self.anvil.url, "evm_increaseTime", [seconds])
        rpc_call(self.anvil.url, "evm_mine")

    async def connected(self) -> ChainBackend:
        if not self._connected:
            await self.chain.connect()
            self._connected = True
        return self.chain

    async def payouts(self, channel_id: str) -> dict[str, int]:
        """What the contract paid out for the channel, per receiver (lower-case hex)."""
        await self.connected()
        head = await self.chain.block_number()
        events = await self.chain.events(0, head, [bytes.fromhex(channel_id[2:])])
        paid: dict[str, int] = {}
        for event in events:
            if event.name == "PaidOut":
                receiver = "0x" + bytes(event.args["receiver"]).hex()
                paid[receiver] = paid.get(receiver, 0) + int(event.args["amount"])
        return paid

    def receiver(self, name: str) -> str:
        return self.users[name].on_chain_address.lower()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.chain.stopService()
        for daemon in self.daemons:
            daemon.stop()


@pytest.fixture
def world(anvil_setup: Generated, tmp_path: Path, anvil: Anvil) -> Iterator[World]:
    w = World(anvil_setup, tmp_path, anvil)
    try:
        yield w
    finally:
        w.close()
    for daemon in w.daemons:
        assert_clean_log(daemon)


def stored_channel(store_dir: Path, channel_id: str) -> Channel:
    """The channel record in a (copied) store directory."""
    store = SessionStore(store_dir, reactor)
    try:
        channels = {c.channel_id: c for c in store.channels()}
    finally:
        store.close()
    return channels[ChannelID(bytes.fromhex(channel_id[2:]))]


async def register_as(w: World, name: str, channel: Channel) -> None:
    """The cheater registers `channel`'s current state on the contract with its own keys."""
    assert channel.current is not None
    index = 0 if name == "alice" else 1
    account = Account(anvil_dev_key(index + 1))
    await (await w.connected()).register(account, channel.params, channel.current.state,
                           channel.current.signatures)


def on_chain_version(w: World, name: str, channel_id: str) -> int | None:
    on_chain = w.channel(name, channel_id).get("onChain")
    return None if on_chain is None else int(on_chain["version"])


def closed(w: World, name: str, channel_id: str) -> bool:
    return bool(w.channel(name, channel_id)["phase"] == "closed")


async def check_payouts(w: World, channel_id: str, alice: int, bob: int) -> None:
    paid = await w.payouts(channel_id)
    assert paid == {k: v for k, v in ((w.receiver("alice"), alice),
                                      (w.receiver("bob"), bob)) if v}, paid
    assert await w.chain.holdings(ChannelID(bytes.fromhex(channel_id[2:]))) == (0, 0)


# ------------------------------------------------------------------------------------------------


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_an_old_state_registered_by_the_peer_is_refuted(world: World,
                                                              tmp_path: Path) -> None:
    w = world
    # The node refuses a challenge duration too short for its own reaction time.
    too_short = w.request("alice", "channel_open", peer="bob", challengeDuration=5,
                          balances={"ETH": {"self": "1", "peer": "0"}})
    assert too_short["error"]["code"] == 203, too_short
    assert too_short["error"]["data"]["name"] == "challengeDuration"

    cid = w.open_channel("5", "3")
    w.pay("alice", cid, "1")                     # alice 4, bob 4: the state bob will cheat with
    backup = w.backup("bob", tmp_path)
    latest = w.pay("bob", cid, "2.5")            # alice 6.5, bob 1.5
    assert latest["balances"] == {"ETH": {"self": "1.5", "peer": "6.5"}}
    w.bob.kill()

    old = stored_channel(backup, cid)
    assert old.current is not None and old.current.state.version < latest["version"]
    with w.pushes("alice") as pushes:
        await register_as(w, "bob", old)
        # Alice's watcher sees the old state and registers hers within the challenge period.
        disputed = pushes.wait(lambda p: p.get("type") == "disputed")
        assert disputed["channelId"] == cid
        until(lambda: on_chain_version(w, "alice", cid) == latest["version"], "the refutation")
        w.travel(CHALLENGE + 1)
        until(lambda: closed(w, "alice", cid), "alice's node concluding")
        pushes.wait(lambda p: p.get("type") == "closed" and p["channelId"] == cid)
    await check_payouts(w, cid, alice=wei("6.5"), bob=wei("1.5"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_node_that_was_down_during_the_register_refutes_on_restart(
        world: World, tmp_path: Path) -> None:
    w = world
    cid = w.open_channel("2", "2")
    w.pay("alice", cid, "1.5")                   # alice 0.5, bob 3.5
    backup = w.backup("bob", tmp_path)
    latest = w.pay("bob", cid, "3")              # alice 3.5, bob 0.5
    w.bob.kill()
    w.alice.stop()

    await register_as(w, "bob", stored_channel(backup, cid))
    w.travel(CHALLENGE // 2)                     # time passes; the challenge period still runs
    w.alice.start()
    # The node opens alice's session again by itself, and the first poll of its watcher finds
    # the registration: no user needs to do anything for the refutation.
    w.reattach("alice")
    assert [c["channelId"] for c in w.call("alice", "channel_list")] == [cid]
    until(lambda: on_chain_version(w, "alice", cid) == latest["version"], "the refutation")
    # What happened before anyone listened is pushed at the first subscribe: the cheater's
    # registration, seen in the first poll at start-up, and alice's refutation.
    with w.pushes("alice") as pushes:
        for version in (1, latest["version"]):
            pushed = pushes.wait(lambda p, v=version: p.get("type") == "disputed"
                                 and p["channel"]["onChain"]["version"] == v)
            assert pushed["channelId"] == cid
    w.travel(CHALLENGE)
    until(lambda: closed(w, "alice", cid), "alice's node concluding")
    await check_payouts(w, cid, alice=wei("3.5"), bob=wei("0.5"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_close_with_a_vanished_peer_settles_through_a_dispute(world: World) -> None:
    w = world
    cid = w.open_channel("3", "1")
    w.pay("alice", cid, "0.75")                  # alice 2.25, bob 1.75
    w.bob.kill()
    closing = w.background(w.call, "alice", "channel_close", channelId=cid)
    until(lambda: w.channel("alice", cid)["phase"] == "disputed", "alice's registration", 90)
    w.travel(CHALLENGE + 1)
    info = closing.result(60)
    assert info["phase"] == "closed" and info["version"] == 1
    await check_payouts(w, cid, alice=wei("2.25"), bob=wei("1.75"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_peer_that_never_funds_gets_everyone_their_deposit_back(world: World) -> None:
    w = world
    bob_account = w.users["bob"].on_chain_address.lower()
    url = w.anvil.url
    # Bob's node accepts and sends its deposit, but the deposit never makes it into a block
    # (taken out of the pool, as a chain under a fee spike might drop it); alice's does.
    rpc_call(url, "evm_setAutomine", [False])
    try:
        with w.pushes("bob") as pushes:
            opening = w.background(w.request, "alice", "channel_open", peer="bob",
                                   balances={"ETH": {"self": "2", "peer": "1"}},
                                   challengeDuration=CHALLENGE)
            proposal = pushes.wait(lambda p: "proposalId" in p)
            accepting = w.background(w.request, "bob", "channel_respondProposal",
                                     proposalId=proposal["proposalId"], accept=True)

            def bobs_deposit() -> str | None:
                pool = rpc_call(url, "txpool_content", []) or {}
                for sender, txs in (pool.get("pending") or {}).items():
                    if sender.lower() == bob_account:
                        return str(next(iter(txs.values()))["hash"])
                return None

            rpc_call(url, "anvil_dropTransaction", [until(bobs_deposit, "bob's deposit")])
            rpc_call(url, "evm_setAutomine", [True])
            rpc_call(url, "evm_mine", [])
            accepted = accepting.result(60)
            answer = opening.result(60)
    finally:
        rpc_call(url, "evm_setAutomine", [True])
    # Bob's user learns the channel was not funded: his deposit failed (after the transaction
    # timeout, 10 s) or, first, alice registered version 0 (after the funding timeout, 8 s).
    error = accepted["error"]
    assert (error["code"] == 103 and "before it was funded" in error["message"]) or \
        (error["code"] == 204 and "our deposit failed" in error["message"]), accepted
    # Funding timed out: alice is told the peer did not fund; her node registers version 0.
    assert answer["error"]["code"] == 103, answer
    (channel,) = w.call("alice", "channel_list")
    cid = channel["channelId"]
    until(lambda: w.channel("alice", cid)["phase"] == "disputed", "the registration")
    w.travel(CHALLENGE + 1)
    until(lambda: closed(w, "alice", cid), "alice's node concluding")
    await check_payouts(w, cid, alice=wei("2"), bob=0)


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_refused_final_update_closes_through_a_dispute(world: World) -> None:
    w = world
    cid = w.open_channel("4", "4")
    w.pay("bob", cid, "1")                       # alice 5, bob 3
    with w.pushes("bob") as bob_pushes, w.pushes("alice") as alice_pushes:
        closing = w.background(w.call, "alice", "channel_close", channelId=cid)
        final = bob_pushes.wait(lambda p: p.get("type") == "final")
        w.call("bob", "channel_respondUpdate", channelId=cid, updateId=final["updateId"],
               accept=False)
        # Both nodes follow the dispute alice's node opens.
        for pushes in (alice_pushes, bob_pushes):
            disputed = pushes.wait(lambda p: p.get("type") == "disputed")
            assert disputed["channel"]["onChain"]["version"] == 1
        w.travel(CHALLENGE + 1)
        info = closing.result(60)
        assert info["phase"] == "closed"
        for pushes in (alice_pushes, bob_pushes):
            done = pushes.wait(lambda p: p.get("type") == "closed" and p["channelId"] == cid)
            assert done["error"]  # closed by a dispute, not by a final state both signed
    until(lambda: closed(w, "bob", cid), "bob's node following the dispute")
    await check_payouts(w, cid, alice=wei("5"), bob=wei("3"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_an_unanswered_final_update_closes_through_a_dispute(world: World) -> None:
    """Bob's node is up but his user never answers: after the response timeout the close goes
    on-chain without him."""
    w = world
    cid = w.open_channel("1", "1")
    w.pay("alice", cid, "0.5")                   # alice 0.5, bob 1.5
    with w.pushes("bob") as bob_pushes:
        closing = w.background(w.call, "alice", "channel_close", channelId=cid)
        bob_pushes.wait(lambda p: p.get("type") == "final")  # seen, never answered
        until(lambda: w.channel("alice", cid)["phase"] == "disputed", "alice's registration", 60)
        w.travel(CHALLENGE + 1)
        assert closing.result(60)["phase"] == "closed"
        bob_pushes.wait(lambda p: p.get("type") == "closed" and p["channelId"] == cid)
    await check_payouts(w, cid, alice=wei("0.5"), bob=wei("1.5"))
