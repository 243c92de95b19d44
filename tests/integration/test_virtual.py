"""Virtual channels end to end (issue #17): three real `twistd perund` daemons on anvil, one per
user (alice, ingrid the intermediary, carol), driven through the API only.

alice and carol each open a ledger channel with ingrid; alice opens a virtual channel with
carol through ingrid, pays her, and the virtual channel closes either cooperatively (folded
back into both ledgers, no transaction) or through a dispute (carol gone). Every payout is
checked to the wei from the contract's `PaidOut` events.
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
from perund.chain.anvil import Anvil, free_port, rpc_call
from perund.chain.backend import ChainBackend
from perund.channel.types import ChannelID, VirtualProof, to_address
from perund.cli.apiclient import Pushes
from perund.cli.generate import Generated, anvil_dev_key, generate
from perund.storage.store import SessionStore
from tests.integration.daemons import Daemon, assert_clean_log
from tests.node.conftest import deploy

ETHER = 10**18
CHALLENGE = 60
"""Every channel's challenge duration (the nodes' minimum is 3 * (poll + tx timeout))."""
USERS = ("alice", "ingrid", "carol")


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


def split(setup: Generated, intermediary: dict[str, Any] | None = None) -> dict[str, Path]:
    """One node config per user (each its own API port and data folder); ingrid's session
    serves as intermediary (with the settings `intermediary`, if given)."""
    node = yaml.safe_load(setup.node_config.read_text())
    node["chain"]["poll_interval"] = "200ms"
    node["timeouts"] = {"response": "8s", "tx": "10s", "funding": "8s", "peer_dial": "2s",
                        "peer_request": "5s"}
    configs = {}
    for name in USERS:
        own = dict(node, data_dir=f"data-{name}",
                   api={"listen": f"tcp:{free_port()}:interface=127.0.0.1"})
        path = setup.node_config.with_name(f"{name}.yaml")
        path.write_text(yaml.safe_dump(own))
        configs[name] = path
    ingrid = next(u for u in setup.users if u.name == "ingrid").session_file
    session = yaml.safe_load(ingrid.read_text())
    session["intermediary"] = intermediary or {"enabled": True, "lock_window": "5s"}
    ingrid.write_text(yaml.safe_dump(session))
    return configs


class Hub:
    """The three daemons with open sessions, the chain, and the helpers the tests share."""

    def __init__(self, setup: Generated, workdir: Path, anvil: Anvil,
                 intermediary: dict[str, Any] | None = None) -> None:
        self.anvil = anvil
        self.users = {u.name: u for u in setup.users}
        configs = split(setup, intermediary)
        self.daemons: dict[str, Daemon] = {}
        self.sessions: dict[str, str] = {}
        for name in USERS:
            self.daemons[name] = Daemon(configs[name], workdir)
            opened = self.daemons[name].call(
                "session_open", configFile=str(self.users[name].session_file))
            self.sessions[name] = opened["sessionId"]
        self.pool = ThreadPoolExecutor(4)
        node = yaml.safe_load(configs["alice"].read_text())
        self.chain = ChainBackend(reactor, url=anvil.url, chain_id=anvil.chain_id,
                                  adjudicator=to_address(node["chain"]["adjudicator"]))
        self.chain.startService()
        self._connected = False

    def call(self, name: str, method: str, **params: Any) -> Any:
        return self.daemons[name].call(method, sessionId=self.sessions[name], **params)

    def request(self, name: str, method: str, **params: Any) -> dict[str, Any]:
        return self.daemons[name].request(method, sessionId=self.sessions[name], **params)

    def background(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        return self.pool.submit(f, *args, **kwargs)

    @contextmanager
    def pushes(self, name: str) -> Iterator[Pushes]:
        socket = self.daemons[name].socket()
        try:
            for topic in ("proposals", "updates"):
                socket.call("subscribe", sessionId=self.sessions[name], topic=topic)
            yield socket
        finally:
            socket.close()

    def open(self, proposer: str, responder: str, ours: str, theirs: str,
             via: str | None = None, max_fee: str | None = None) -> dict[str, Any]:
        """`proposer` opens a channel with `responder` (a virtual one `via` an intermediary,
        paying it at most `max_fee` ETH), whose user accepts the pushed proposal; both sides'
        channel info once open."""
        extra: dict[str, Any] = {} if via is None else {"via": via}
        if max_fee is not None:
            extra["maxFee"] = {"ETH": max_fee}
        with self.pushes(responder) as pushes:
            opening = self.background(self.call, proposer, "channel_open", peer=responder,
                                      balances={"ETH": {"self": ours, "peer": theirs}},
                                      challengeDuration=CHALLENGE, **extra)
            proposal = pushes.wait(lambda p: "proposalId" in p)
            assert proposal["kind"] == ("ledger" if via is None else "virtual")
            assert proposal.get("via") == via
            accepted = self.call(responder, "channel_respondProposal",
                                 proposalId=proposal["proposalId"], accept=True)
            channel: dict[str, Any] = opening.result(120)
        assert channel["phase"] == "open" and accepted["phase"] == "open"
        assert channel["channelId"] == accepted["channelId"]
        return channel

    def channel(self, name: str, channel_id: str) -> dict[str, Any]:
        info: dict[str, Any] = self.call(name, "channel_get", channelId=channel_id)
        return info

    def nonces(self) -> dict[str, int]:
        return {name: int(rpc_call(self.anvil.url, "eth_getTransactionCount",
                                   [self.users[name].on_chain_address, "latest"]), 16)
                for name in USERS}

    def travel(self, seconds: int) -> None:
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

    async def check_payouts(self, channel_id: str, **expected: int) -> None:
        paid = await self.payouts(channel_id)
        wanted = {self.users[name].on_chain_address.lower(): amount
                  for name, amount in expected.items() if amount}
        assert paid == wanted, paid
        assert await self.chain.holdings(ChannelID(bytes.fromhex(channel_id[2:]))) == (0, 0)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.chain.stopService()
        for daemon in self.daemons.values():
            daemon.stop()


@pytest_twisted.async_fixture
async def hub_setup(anvil: Anvil, tmp_path: Path) -> Generated:
    return generate(tmp_path, chain_url=anvil.url, chain_id=anvil.chain_id,
                    adjudicator=await deploy(anvil), api_port=free_port(),
                    comm_ports=[free_port() for _ in USERS], users=USERS)


@pytest.fixture
def hub(hub_setup: Generated, tmp_path: Path, anvil: Anvil) -> Iterator[Hub]:
    h = Hub(hub_setup, tmp_path, anvil)
    try:
        yield h
    finally:
        h.close()
    for daemon in h.daemons.values():
        assert_clean_log(daemon)


def ledgers(h: Hub) -> tuple[str, str]:
    la = h.open("alice", "ingrid", "5", "5")["channelId"]
    lc = h.open("carol", "ingrid", "5", "5")["channelId"]
    return la, lc


# ------------------------------------------------------------------------------------------------


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_virtual_channel_opens_pays_and_closes_with_no_transaction(hub: Hub) -> None:
    h = hub
    la, lc = ledgers(h)
    nonces = h.nonces()
    v = h.open("alice", "carol", "1", "0", via="ingrid")
    vid = v["channelId"]
    assert v["kind"] == "virtual" and v["via"] == "ingrid" and v["fundedBy"] == [la, lc]
    assert h.channel("carol", vid)["fundedBy"] == [lc, la]
    assert h.channel("alice", la)["funds"] == [vid]
    assert h.channel("alice", la)["balances"] == {"ETH": {"self": "4", "peer": "5"}}
    # A ledger that funds an open virtual channel does not close.
    refused = h.request("alice", "channel_close", channelId=la)
    assert refused["error"]["code"] == 204 and refused["error"]["data"]["virtual_channels"] \
        == [vid], refused
    ingrid_versions = {cid: h.channel("ingrid", cid)["version"] for cid in (la, lc)}
    for _ in range(100):
        h.call("alice", "channel_send", channelId=vid, payments=[
            {"currency": "ETH", "payee": "carol", "amount": "0.001"}])
    assert h.channel("carol", vid)["balances"] == {"ETH": {"self": "0.1", "peer": "0.9"}}
    # Ingrid's node handled none of the payments: her ledgers did not move, she records none.
    assert {cid: h.channel("ingrid", cid)["version"] for cid in (la, lc)} == ingrid_versions
    assert h.call("ingrid", "payment_list")["payments"] == []
    assert len(h.call("carol", "payment_list", limit=200)["payments"]) == 100
    with h.pushes("carol") as pushes:
        closing = h.background(h.call, "alice", "channel_close", channelId=vid)
        final = pushes.wait(lambda p: p.get("type") == "final")
        h.call("carol", "channel_respondUpdate", channelId=vid, updateId=final["updateId"],
               accept=True)
        assert closing.result(60)["phase"] == "closed"
    until(lambda: h.channel("carol", vid)["phase"] == "closed", "carol's fold")
    # No transaction from the ledgers' funding to the virtual channel's close.
    assert h.nonces() == nonces
    assert h.channel("alice", la)["balances"] == {"ETH": {"self": "4.9", "peer": "5.1"}}
    assert h.channel("carol", lc)["balances"] == {"ETH": {"self": "5.1", "peer": "4.9"}}
    assert h.channel("ingrid", la)["balances"] == {"ETH": {"self": "5.1", "peer": "4.9"}}
    assert "funds" not in h.channel("alice", la)
    # The ledgers close as any channel, paying the virtual channel's outcome to the wei.
    for name, cid in (("alice", la), ("carol", lc)):
        with h.pushes("ingrid") as pushes:
            closing = h.background(h.call, name, "channel_close", channelId=cid)
            final = pushes.wait(lambda p: p.get("type") == "final")
            h.call("ingrid", "channel_respondUpdate", channelId=cid,
                   updateId=final["updateId"], accept=True)
            assert closing.result(60)["phase"] == "closed"
    await h.check_payouts(la, alice=wei("4.9"), ingrid=wei("5.1"))
    await h.check_payouts(lc, carol=wei("5.1"), ingrid=wei("4.9"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_carol_gone_alice_gets_her_balance_on_chain(hub: Hub) -> None:
    h = hub
    la, lc = ledgers(h)
    vid = h.open("alice", "carol", "1", "0", via="ingrid")["channelId"]
    for _ in range(3):
        h.call("alice", "channel_send", channelId=vid, payments=[
            {"currency": "ETH", "payee": "carol", "amount": "0.1"}])
    h.daemons["carol"].kill()
    closing = h.background(h.call, "alice", "channel_close", channelId=vid, force=True)
    until(lambda: h.channel("alice", vid)["phase"] == "disputed", "the virtual registration", 90)
    until(lambda: h.channel("alice", la)["phase"] == "disputed", "the ledger's registration")
    # Ingrid sees the virtual channel registered and takes her other ledger on-chain too.
    until(lambda: h.channel("ingrid", lc)["phase"] == "disputed", "ingrid's registration", 90)
    h.travel(CHALLENGE + 1)
    assert closing.result(120)["phase"] == "closed"
    until(lambda: h.channel("alice", la)["phase"] == "closed", "alice's ledger concluded", 90)
    until(lambda: h.channel("ingrid", lc)["phase"] == "closed", "carol's ledger concluded", 90)
    # alice: her free 4 + her virtual 0.7; carol, offline, is paid her 5 + 0.3 all the same.
    await h.check_payouts(la, alice=wei("4.7"), ingrid=wei("5.3"))
    await h.check_payouts(lc, carol=wei("5.3"), ingrid=wei("4.7"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_ingrid_gone_the_final_state_is_settled_through_both_ledgers(hub: Hub) -> None:
    h = hub
    la, lc = ledgers(h)
    vid = h.open("alice", "carol", "2", "0", via="ingrid")["channelId"]
    h.call("alice", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "carol", "amount": "0.5"}])
    h.daemons["ingrid"].kill()
    # alice and carol still pay each other: ingrid takes no part.
    h.call("carol", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "alice", "amount": "0.25"}])
    with h.pushes("carol") as pushes:
        closing = h.background(h.call, "alice", "channel_close", channelId=vid)
        final = pushes.wait(lambda p: p.get("type") == "final")
        h.call("carol", "channel_respondUpdate", channelId=vid, updateId=final["updateId"],
               accept=True)
    # The folds go unanswered: each disputes its ledger with the final state.
    for name, ledger in (("alice", la), ("carol", lc)):
        until(lambda n=name, c=ledger: h.channel(n, c)["phase"] == "disputed",
              f"{name}'s ledger registered", 90)
    h.travel(CHALLENGE + 1)
    assert closing.result(120)["phase"] == "closed"
    for name, ledger in (("alice", la), ("carol", lc)):
        until(lambda n=name, c=ledger: h.channel(n, c)["phase"] == "closed",
              f"{name}'s ledger concluded", 90)
    until(lambda: h.channel("carol", vid)["phase"] == "closed", "carol's virtual channel")
    # Everyone gets the final state's outcome; ingrid's absence costs her only the close.
    await h.check_payouts(la, alice=wei("4.75"), ingrid=wei("5.25"))
    await h.check_payouts(lc, carol=wei("5.25"), ingrid=wei("4.75"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_stale_virtual_state_registered_by_a_cheater_is_refuted(
        hub: Hub, tmp_path: Path) -> None:
    h = hub
    la, lc = ledgers(h)
    vid = h.open("alice", "carol", "2", "0", via="ingrid")["channelId"]
    h.call("alice", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "carol", "amount": "0.1"}])   # alice 1.9: her backup
    backup = tmp_path / "alice-backup"
    shutil.copytree(h.users["alice"].session_file.parent / "db", backup)
    h.call("alice", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "carol", "amount": "1.5"}])   # alice 0.4, carol 1.6
    h.daemons["alice"].kill()
    # alice, cheating, registers her old virtual state through her ledger.
    store = SessionStore(backup, reactor)
    try:
        old = {c.channel_id: c for c in store.channels()}
    finally:
        store.close()
    v_old, la_old = old[ChannelID(bytes.fromhex(vid[2:]))], old[ChannelID(bytes.fromhex(la[2:]))]
    assert v_old.current is not None and la_old.current is not None
    chain = await h.connected()
    proof = VirtualProof(v_old.params, v_old.current.state,  # type: ignore[arg-type]
                         v_old.current.signatures)
    await chain.register_virtual(Account(anvil_dev_key(1)), la_old.params,  # type: ignore[arg-type]
                                 la_old.current.state, la_old.current.signatures, proof)
    # carol's node refutes with the latest state through her own ledger; ingrid settles both.
    until(lambda: (h.channel("carol", vid).get("onChain") or {}).get("version")
          == h.channel("carol", vid)["version"], "carol's refutation", 90)
    h.travel(CHALLENGE + 1)
    for name, ledger in (("ingrid", la), ("ingrid", lc)):
        until(lambda n=name, c=ledger: h.channel(n, c)["phase"] == "closed",
              f"{ledger} concluded", 90)
    until(lambda: h.channel("carol", vid)["phase"] == "closed", "carol's virtual channel", 90)
    await h.check_payouts(la, alice=wei("3.4"), ingrid=wei("6.6"))
    await h.check_payouts(lc, carol=wei("6.6"), ingrid=wei("3.4"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_restarts_keep_the_virtual_channel_and_the_intermediarys_record(hub: Hub) -> None:
    h = hub
    la, lc = ledgers(h)
    nonces = h.nonces()
    vid = h.open("alice", "carol", "1", "1", via="ingrid")["channelId"]
    h.call("alice", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "carol", "amount": "0.5"}])
    for name in ("ingrid", "alice"):
        h.daemons[name].stop()
        h.daemons[name].start()
        h.daemons[name].wait_for_sessions(1)
        (listed,) = h.daemons[name].call("session_list")
        h.sessions[name] = listed["sessionId"]
    assert h.channel("alice", vid)["kind"] == "virtual"
    assert h.channel("alice", vid)["balances"] == {"ETH": {"self": "0.5", "peer": "1.5"}}
    h.call("carol", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "alice", "amount": "0.25"}])
    with h.pushes("alice") as pushes:
        closing = h.background(h.call, "carol", "channel_close", channelId=vid)
        final = pushes.wait(lambda p: p.get("type") == "final")
        h.call("alice", "channel_respondUpdate", channelId=vid, updateId=final["updateId"],
               accept=True)
        assert closing.result(60)["phase"] == "closed"
    until(lambda: h.channel("alice", vid)["phase"] == "closed", "alice's fold")
    assert h.nonces() == nonces
    assert h.channel("ingrid", la)["balances"] == {"ETH": {"self": "5.25", "peer": "4.75"}}
    assert h.channel("ingrid", lc)["balances"] == {"ETH": {"self": "4.75", "peer": "5.25"}}


async def register_old_ledger(h: Hub, backup: Path, ledger: str, cheater: int) -> None:
    """A cheater registers the ledger state of an old store backup (from before the lock)."""
    store = SessionStore(backup, reactor)
    try:
        old = {c.channel_id: c for c in store.channels()}[ChannelID(bytes.fromhex(ledger[2:]))]
    finally:
        store.close()
    assert old.current is not None and not old.current.state.locked
    await (await h.connected()).register(Account(anvil_dev_key(cheater)), old.params,  # type: ignore[arg-type]
                                         old.current.state, old.current.signatures)


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_alice_registers_her_ledger_from_before_the_lock_and_is_refuted(
        hub: Hub, tmp_path: Path) -> None:
    h = hub
    la, lc = ledgers(h)
    backup = tmp_path / "alice-backup"
    shutil.copytree(h.users["alice"].session_file.parent / "db", backup)
    vid = h.open("alice", "carol", "3", "0", via="ingrid")["channelId"]
    h.call("alice", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "carol", "amount": "2"}])     # alice 1, carol 2
    h.daemons["alice"].kill()
    await register_old_ledger(h, backup, la, cheater=1)  # alice 5, ingrid 5: no lock
    # ingrid refutes with the ledger's lock (and the virtual state she holds, version 0);
    # carol refutes that version 0 with the latest through her own ledger.
    until(lambda: h.channel("ingrid", la).get("onChain", {}).get("version")
          == h.channel("ingrid", la)["version"], "ingrid's refutation", 90)
    until(lambda: (h.channel("carol", vid).get("onChain") or {}).get("version")
          == h.channel("carol", vid)["version"], "carol's refutation", 90)
    h.travel(CHALLENGE + 1)
    for ledger in (la, lc):
        until(lambda c=ledger: h.channel("ingrid", c)["phase"] == "closed", "conclusions", 90)
    until(lambda: h.channel("carol", vid)["phase"] == "closed", "carol's virtual channel", 90)
    await h.check_payouts(la, alice=wei("3"), ingrid=wei("7"))
    await h.check_payouts(lc, carol=wei("7"), ingrid=wei("3"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_ingrid_registers_a_ledger_from_before_the_lock_and_is_refuted(
        hub: Hub, tmp_path: Path) -> None:
    h = hub
    la, lc = ledgers(h)
    h.call("alice", "channel_send", channelId=la, payments=[
        {"currency": "ETH", "payee": "ingrid", "amount": "1"}])    # alice 4, ingrid 6
    backup = tmp_path / "ingrid-backup"
    shutil.copytree(h.users["ingrid"].session_file.parent / "db", backup)
    h.call("ingrid", "channel_send", channelId=la, payments=[
        {"currency": "ETH", "payee": "alice", "amount": "1"}])     # alice 5, ingrid 5
    vid = h.open("alice", "carol", "2", "0", via="ingrid")["channelId"]
    h.call("alice", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "carol", "amount": "0.5"}])   # alice 1.5, carol 0.5
    h.daemons["ingrid"].kill()
    await register_old_ledger(h, backup, la, cheater=2)  # alice 4, ingrid 6: no lock
    # alice refutes with her ledger's latest state and the virtual channel's; carol, seeing it
    # registered, settles her ledger through it too. Ingrid is gone.
    until(lambda: (h.channel("alice", vid).get("onChain") or {}).get("version")
          == h.channel("alice", vid)["version"], "alice's refutation", 90)
    until(lambda: h.channel("carol", lc)["phase"] == "disputed", "carol's ledger", 90)
    h.travel(CHALLENGE + 1)
    until(lambda: h.channel("alice", la)["phase"] == "closed", "alice's ledger", 90)
    until(lambda: h.channel("carol", lc)["phase"] == "closed", "carol's ledger", 90)
    until(lambda: h.channel("alice", vid)["phase"] == "closed", "the virtual channel", 90)
    await h.check_payouts(la, alice=wei("4.5"), ingrid=wei("5.5"))
    await h.check_payouts(lc, carol=wei("5.5"), ingrid=wei("4.5"))
