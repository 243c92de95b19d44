"""Two sessions in one node on the embedded dev chain: open, fund, pay, restart, close.

Everything goes through the real stack: keystores, contacts, the durable session store, peer
connections over loopback TCP, the chain backend; balances are checked to the wei.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, capturedLogs, formatEvent

from perund.api.credentials import Scope
from perund.chain.anvil import Anvil, free_port
from perund.chain.backend import ChainBackend
from perund.channel import events as ev
from perund.channel.fees import FeeTerms
from perund.channel.phases import Phase
from perund.channel.proposal import OpenRequest
from perund.channel.types import ETH, ChannelID, hex_address
from perund.cli.generate import Generated
from perund.config import NodeConfig, load_node_config
from perund.errors import (
    ChainRpcError,
    FailedPrecondition,
    InsufficientFunds,
    InvalidArgument,
    InvalidConfig,
    PeerRejected,
    PerundError,
    ResourceExists,
    ResourceNotFound,
)
from perund.keystore.v3 import write_keystore
from perund.node import NodeService
from perund.node_api import NodeAPI
from perund.session.notices import ChannelNotice, Notice, ProposalNotice, UpdateNotice
from perund.session.session import Session
from perund.storage.store import SessionStore
from tests.node.conftest import two_nodes
from tests.test_node import NotRunningReactor

ETHER = 10**18


@pytest_twisted.async_yield_fixture
async def node(setup: Generated) -> AsyncIterator[NodeService]:
    service = NodeService(reactor, load_node_config(setup.node_config))
    service.startService()
    await service.ready
    yield service
    await service.stopService()


async def started(config: NodeConfig) -> NodeService:
    """A node of `config`, once its start-up completed. A start that fails is stopped here,
    and does not stop the tests' reactor as it would twistd's (`NotRunningReactor`): a test
    that fails there fails, instead of leaving the process hung on the node's threads."""
    service = NodeService(NotRunningReactor(), config)
    service.startService()
    try:
        await service.ready
    except BaseException:
        await service.stopService()
        raise
    return service


@asynccontextmanager
async def running(config: NodeConfig) -> AsyncIterator[NodeService]:
    """A node of `config`, started (as `started`) and stopped when the block ends."""
    service = await started(config)
    try:
        yield service
    finally:
        await service.stopService()


def auto_answer(session: Session, accept_updates: bool = True) -> list[Notice]:
    """Answer every proposal and update question of `session` as its user would; the notices."""
    seen: list[Notice] = []

    def observe(notice: Notice) -> None:
        seen.append(notice)
        # A user who answers does not wait for the outcome (its session may break later).
        if isinstance(notice, ProposalNotice):
            session.client.respond_proposal(notice.proposal.proposal_id, True).addErrback(
                lambda failure: failure.trap(PerundError))
        elif isinstance(notice, UpdateNotice):
            session.client.respond_update(notice.channel.channel_id, notice.update_id,
                                          accept_updates).addErrback(
                lambda failure: failure.trap(PerundError))

    session.client.observers.append(observe)
    return seen


async def open_pair(node: NodeService, setup: Generated) -> tuple[Session, Session]:
    alice = await node.open_session(str(setup.users[0].session_file))
    bob = await node.open_session(str(setup.users[1].session_file))
    return alice, bob


@pytest_twisted.ensureDeferred
async def test_channel_life_with_a_restart_of_both_sessions(node: NodeService,
                                                            setup: Generated) -> None:
    chain = node.chain
    alice, bob = await open_pair(node, setup)
    auto_answer(bob)
    start = [await chain.balance(s.account.address) for s in (alice, bob)]
    bob_address = alice.contacts.by_alias("bob").off_chain_address
    channel = await alice.client.open_channel(
        OpenRequest(bob_address, (ETH,), ((10 * ETHER, 2 * ETHER),), 600))
    cid = channel.channel_id
    assert channel.phase is Phase.OPEN
    await _until(lambda: bob.client.channels[cid].phase is Phase.OPEN, "bob sees it funded")
    await alice.client.send(cid, ((ETH, 3 * ETHER),))
    await bob.client.send(cid, ((ETH, ETHER),))
    # A payment request, answered by bob's user (auto_answer accepts).
    await alice.client.send(cid, ((ETH, -ETHER),))
    await alice.client.send(cid, ((ETH, ETHER),))

    # Both users stop their sessions (channels stay persisted) and open them again.
    fees = [alice.settlement.fees_paid, bob.settlement.fees_paid]
    assert fees[0] > 0 and fees[1] > 0  # each paid for its own deposit
    # The archive keeps what the node's limits.payment_history_size allows.
    assert alice.store.history.archive.max_bytes == node.config.limits.payment_history_size
    fsyncs = alice.store.fsync_times.count + bob.store.fsync_times.count
    assert fsyncs > 0
    assert [c.channel_id for c in await node.close_session(alice.id, force=True)] == [cid]
    await node.close_session(bob.id, force=True)
    # Closed sessions' fsyncs (their closing commits' too) still count: Prometheus expects
    # the histogram to only grow.
    (counted,) = [int(line.split()[1]) for line in node.exposition.render().splitlines()
                  if line.startswith("perund_store_fsync_seconds_count ")]
    assert counted >= fsyncs
    alice = await node.open_session(str(setup.users[0].session_file))
    assert resyncing(node) == 1  # until bob is back with his Sync
    # A channel that settled meanwhile (a dispute concluded while the node was down) keeps
    # its flag but waits for nothing: not counted (an audit found the gauge stuck at 1).
    waiting = alice.client.channels[cid]
    alice.client.channels[cid] = waiting.evolve(phase=Phase.CLOSED)
    assert resyncing(node) == 0
    alice.client.channels[cid] = waiting
    bob = await node.open_session(str(setup.users[1].session_file))
    bob_notices = auto_answer(bob)
    await _until(lambda: resyncing(node) == 0, "both sides resynced")
    assert [c.channel_id for c in alice.restored] == [cid]
    assert [c.channel_id for c in bob.restored] == [cid]
    assert alice.client.channels[cid].latest.balances == ((8 * ETHER, 4 * ETHER),)

    # Payments continue after the restart; then a cooperative close pays both out.
    await alice.client.send(cid, ((ETH, ETHER // 4),))
    closed = await alice.client.close(cid)
    final = closed.latest
    assert final.is_final
    assert final.balances == ((8 * ETHER - ETHER // 4, 4 * ETHER + ETHER // 4),)
    await _until_closed(bob_notices)
    assert await chain.holdings(cid) == (0, 0)
    deposits = [10 * ETHER, 2 * ETHER]
    for i, s in enumerate((alice, bob)):
        paid_gas = fees[i] + s.settlement.fees_paid
        expected = start[i] - deposits[i] + final.balances[0][i] - paid_gas
        assert await chain.balance(s.account.address) == expected

    # Closed for longer than limits.closed_channel_retention (its least, 15 min, cut short
    # here): the channel retires, out of channel_list, still found by channel_get.
    assert alice.retirement is not None
    assert alice.retirement.retention == node.config.limits.closed_channel_retention
    alice.retirement.retention = 0.0
    assert await alice.retirement.retire_due() == [cid]
    (retired,) = [s.value for s in node.exposition.samples()
                  if s.name == "perund_channels_retired"]
    assert retired == 1
    api = NodeAPI(node)
    assert await api.channel_list(bytes.fromhex(alice.id)) == []
    view = await api.channel_get(bytes.fromhex(alice.id), cid)
    assert (view.phase, view.version, view.is_final) == ("closed", final.version, True)
    assert [(b.ours, b.peer) for b in view.balances] == [final.balances[0]]
    await alice.store.flush()  # a listing shows committed retirements
    views, next_before = await api.channel_list_retired(bytes.fromhex(alice.id), 100, None)
    assert [v.channel_id for v in views] == [cid] and next_before is None
    assert await api.channel_list_retired(bytes.fromhex(alice.id), 100, cid) == ([], None)
    with pytest.raises(ResourceNotFound):
        await api.channel_list_retired(bytes.fromhex(alice.id), 100, b"\x01" * 32)


def resyncing(node: NodeService) -> float:
    """The node's `perund_channels_resyncing` gauge."""
    (value,) = [s.value for s in node.exposition.samples()
                if s.name == "perund_channels_resyncing"]
    return value


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(400):
        if condition():
            return
        await deferLater(reactor, 0.025, lambda: None)
    raise AssertionError(f"gave up waiting until {what}")


async def _until_closed(notices: list[Notice]) -> None:
    await _until(lambda: any(isinstance(n, ChannelNotice) and isinstance(n.event, ev.Closed)
                             for n in notices), "bob sees the channel closed")


@pytest_twisted.ensureDeferred
async def test_session_close_refused_with_open_channels_and_reopen_twice_refused(
        node: NodeService, setup: Generated) -> None:
    alice, bob = await open_pair(node, setup)
    auto_answer(bob)
    with pytest.raises(ResourceExists):
        await node.open_session(str(setup.users[0].session_file))
    # A relative path is relative to the node config's folder, wherever the node runs.
    relative = setup.users[0].session_file.relative_to(setup.node_config.parent)
    with pytest.raises(ResourceExists) as relative_open:
        await node.open_session(str(relative))
    assert relative_open.value.data["id"] == "0x" + alice.id
    # A copy of her session.yaml is still her session: refused with her session's ID (its
    # listener would otherwise clash with her open one on the peer port).
    copy = setup.users[0].session_file.with_name("copy.yaml")
    copy.write_text(setup.users[0].session_file.read_text())
    with pytest.raises(ResourceExists) as again:
        await node.open_session(str(copy))
    assert again.value.data["id"] == "0x" + alice.id
    # A session of another off-chain key and store on her on-chain account would see and
    # spend her money: refused too.
    folder = setup.users[0].session_file.parent
    other_key = write_keystore(folder / "keystore" / "other.json", os.urandom(32),
                               (folder / "password").read_text().rstrip("\n"), light=True)
    document = yaml.safe_load(setup.users[0].session_file.read_text())
    document["off_chain"] = {"address": hex_address(other_key),
                             "keystore": "keystore/other.json"}
    document["database"] = "other-db"
    document["comm"]["listen"] = f"tcp:{free_port()}:interface=127.0.0.1"
    same_account = folder / "same-account.yaml"
    same_account.write_text(yaml.safe_dump(document))
    with pytest.raises(ResourceExists, match="on-chain account") as shared:
        await node.open_session(str(same_account))
    assert shared.value.data["id"] == "0x" + alice.id
    # Another node (here in the same process) finds her store locked: one node per session.
    other = NodeService(reactor, load_node_config(two_nodes(setup)[1]))
    other.startService()
    try:
        await other.ready
        with pytest.raises(FailedPrecondition, match="open in another process"):
            await other.open_session(str(setup.users[0].session_file))
    finally:
        await other.stopService()
    bob_address = alice.contacts.by_alias("bob").off_chain_address
    await alice.client.open_channel(OpenRequest(bob_address, (ETH,), ((ETHER, 0),), 600))
    with pytest.raises(FailedPrecondition) as caught:
        await node.close_session(alice.id, force=False)
    assert len(caught.value.data["openChannels"]) == 1
    assert alice.id in node.sessions


@pytest_twisted.ensureDeferred
async def test_a_key_that_does_not_unlock_leaves_the_store_free(node: NodeService,
                                                               setup: Generated) -> None:
    """The keys unlock while the store opens (`Session.prepare`): a wrong password is the
    error, even when another process holds the store too, and it leaves the store free, so
    the session opens once the password is right."""
    session_file = setup.users[0].session_file
    password = session_file.parent / "password"
    right = password.read_text()
    password.write_text("not the password\n")
    with pytest.raises(InvalidConfig, match="password"):
        await node.open_session(str(session_file))
    held = SessionStore(session_file.parent / "db", reactor)
    try:
        with pytest.raises(InvalidConfig, match="password"):
            await node.open_session(str(session_file))
    finally:
        held.close()
    password.write_text(right)
    # A NUL in the path is a config error naming the field (it was an internal error).
    with pytest.raises(InvalidConfig, match="configFile: a path has no NUL character"):
        await node.open_session(str(session_file) + "\x00x")
    alice = await node.open_session(str(session_file))
    assert alice.id in node.sessions


@pytest_twisted.ensureDeferred
async def test_a_store_that_cannot_open_is_a_config_error_naming_it(node: NodeService,
                                                                    setup: Generated) -> None:
    """A damaged store, or one whose files are links, is the operator's to mend: an error
    naming `database`, the folder and why, not an internal error (found by an audit)."""
    session_file = setup.users[0].session_file
    alice = await node.open_session(str(session_file))
    await node.close_session(alice.id, force=False)
    data = session_file.parent / "db" / "data"
    content = data.read_bytes()
    data.write_bytes(b"XXXX" + content[4:])  # not semidbm's header: no torn write does that
    with pytest.raises(InvalidConfig, match=r"database: .*db: the store cannot be opened: "
                                            r".*not a semidbm") as corrupt:
        await node.open_session(str(session_file))
    assert corrupt.value.data["name"] == "database"
    data.write_bytes(content)
    lock = session_file.parent / "db" / "lock"
    lock.unlink()
    lock.symlink_to(session_file)
    with pytest.raises(InvalidConfig, match="'lock' is a symbolic link"):
        await node.open_session(str(session_file))
    lock.unlink()
    assert (await node.open_session(str(session_file))).id in node.sessions


@pytest_twisted.ensureDeferred
async def test_a_start_that_fails_releases_the_sessions_it_prepared(setup: Generated) -> None:
    """A start prepares the remembered sessions (their stores open) while the chain starts;
    when the start fails after that (the API's port is taken), it lets their stores go."""
    config = load_node_config(setup.node_config)
    first = await started(config)
    await first.open_session(str(setup.users[0].session_file))
    await first.stopService()
    taken = socket.socket()
    taken.bind(("127.0.0.1", int(config.api.listen.split(":")[1])))
    taken.listen(1)
    # Not the running reactor: a failed start must not stop the tests' reactor.
    failing = NodeService(NotRunningReactor(), config)
    try:
        failing.startService()
        with pytest.raises(InvalidConfig, match="cannot listen for the API"):
            await failing.ready
    finally:
        await failing.stopService()  # waits for the release
        taken.close()
    SessionStore(setup.users[0].session_file.parent / "db", reactor).close()
    async with running(config) as again:
        assert len(again.sessions) == 1


def _anvil_rpc(url: str, method: str, params: list[object]) -> object:
    """One JSON-RPC call to anvil (a test's own control of the chain: snapshots)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())["result"]


async def _closed_after_a_snapshot(node: NodeService, anvil: Anvil, setup: Generated,
                                   ) -> tuple[Session, Session, ChannelID, object]:
    """alice opens a channel of 1 ETH with bob, pays him a quarter and closes it
    cooperatively; the anvil snapshot taken just before the close is returned with the
    sessions and the channel, for `evm_revert` to take the conclusion back."""
    alice, bob = await open_pair(node, setup)
    bob_notices = auto_answer(bob)
    bob_address = alice.contacts.by_alias("bob").off_chain_address
    channel = await alice.client.open_channel(
        OpenRequest(bob_address, (ETH,), ((ETHER, 0),), 600))
    cid = channel.channel_id
    await _until(lambda: bob.client.channels[cid].phase is Phase.OPEN, "bob sees it funded")
    await alice.client.send(cid, ((ETH, ETHER // 4),))
    snapshot = await deferToThread(_anvil_rpc, anvil.url, "evm_snapshot", [])
    await alice.client.close(cid)
    await _until_closed(bob_notices)
    return alice, bob, cid, snapshot


async def _concluded_again(chain: ChainBackend, cid: ChannelID, bob: Session, expected: int,
                           events: list[dict[str, object]]) -> None:
    """Concluded again (by alice, participant 0): the contract holds nothing, bob paid no gas
    and has `expected`, and the log said at critical level what happened."""
    assert await chain.holdings(cid) == (0, 0)
    assert await chain.balance(bob.account.address) == expected
    told = [formatEvent(e) for e in events if e.get("log_level") is LogLevel.critical]
    assert any("has not concluded channel 0x" + cid.hex() in line for line in told)


@pytest.mark.anvil
@pytest_twisted.ensureDeferred
async def test_a_conclusion_the_chain_lost_is_settled_again_at_the_next_start(
        anvil: Anvil, anvil_setup: Generated) -> None:
    """The chain loses the block of a cooperative close after both users were told the
    channel closed (an embedded chain killed between its state saves; a reorganisation deeper
    than the confirmations). At the next start the node finds the deposits still held and
    the channel not concluded, and concludes it again: the money arrives to the wei."""
    config = load_node_config(anvil_setup.node_config)
    first = await started(config)
    _alice, bob, cid, snapshot = await _closed_after_a_snapshot(first, anvil, anvil_setup)
    chain = first.chain
    assert await chain.holdings(cid) == (0, 0)
    await first.stopService()

    assert await deferToThread(_anvil_rpc, anvil.url, "evm_revert", [snapshot]) is True
    backend = ChainBackend(reactor, url=anvil.url, chain_id=anvil.chain_id,
                           adjudicator=config.chain.adjudicator)
    backend.startService()
    try:
        await backend.connect()
        assert await backend.holdings(cid) == (ETHER, 0)  # the deposits: not paid out
        bob_before = await backend.balance(bob.account.address)
    finally:
        backend.stopService()

    with capturedLogs() as events:
        second = await started(config)
    try:
        sessions = list(second.sessions.values())
        assert len(sessions) == 2  # both were open when the node stopped
        await _until(lambda: all(s.client.channels[cid].phase is Phase.CLOSED
                                 for s in sessions), "both sides closed again")
        await _concluded_again(second.chain, cid, bob, bob_before + ETHER // 4, events)
    finally:
        await second.stopService()


@pytest.mark.anvil
@pytest_twisted.ensureDeferred
async def test_a_conclusion_the_chain_loses_while_the_node_runs_is_settled_again(
        anvil: Anvil, anvil_setup: Generated) -> None:
    """The same loss while the node runs: the watchers find the blocks they read gone, and
    the closed channel whose conclusion went with them is settled again at once, not at the
    next start."""
    async with running(load_node_config(anvil_setup.node_config)) as node:
        alice, bob, cid, snapshot = await _closed_after_a_snapshot(node, anvil, anvil_setup)
        concluded_in = await node.chain.block_number()
        await _until(lambda: all((s.watcher.cursor or 0) >= concluded_in
                                 for s in (alice, bob)), "both watchers read the conclusion")
        bob_before = await node.chain.balance(bob.account.address)

        with capturedLogs() as events:
            assert await deferToThread(_anvil_rpc, anvil.url, "evm_revert", [snapshot]) is True
            assert await node.chain.holdings(cid) == (ETHER, 0)
            for _ in range(200):
                if await node.chain.holdings(cid) == (0, 0):
                    break
                await deferLater(reactor, 0.05, lambda: None)
            await _until(lambda: all(s.client.channels[cid].phase is Phase.CLOSED
                                     for s in (alice, bob)), "both closed")
        await _concluded_again(node.chain, cid, bob, bob_before, events)


@pytest.mark.anvil
@pytest_twisted.ensureDeferred
async def test_a_channel_whose_deposits_the_chain_loses_while_the_node_runs_takes_no_update(
        anvil: Anvil, anvil_setup: Generated) -> None:
    """The chain loses the blocks of a channel's deposits while the node runs (a chain
    restarted from an older save, a deep reorganisation): the channel takes no payment and does
    not close until the deposits are back. It used to take payments on money the chain did not
    hold, and "close" paying nothing (the tx-crash review's finding). Here alice's node cannot
    tell its share (no record of it, as for a channel funded by an older perund, and a payment
    since), so it deposits nothing by itself (test_reorgs: the share it knows it deposits)."""
    async with running(load_node_config(anvil_setup.node_config)) as node:
        alice, bob = await open_pair(node, anvil_setup)
        auto_answer(bob)
        bob_address = alice.contacts.by_alias("bob").off_chain_address
        snapshot = await deferToThread(_anvil_rpc, anvil.url, "evm_snapshot", [])
        channel = await alice.client.open_channel(
            OpenRequest(bob_address, (ETH,), ((ETHER, 0),), 600))
        cid = channel.channel_id
        await _until(lambda: bob.client.channels[cid].phase is Phase.OPEN, "bob sees it funded")
        funded_in = await node.chain.block_number()
        await _until(lambda: all((s.watcher.cursor or 0) >= funded_in for s in (alice, bob)),
                     "both watchers read the deposit")
        paid = await alice.client.send(cid, ((ETH, ETHER // 4),))
        alice.store.delete_meta("deposit:" + cid.hex())

        with capturedLogs() as events:
            assert await deferToThread(_anvil_rpc, anvil.url, "evm_revert", [snapshot]) is True
            await _until(lambda: all(cid in (s.missing_deposits.held if s.missing_deposits
                                             else {}) for s in (alice, bob)),
                         "both sessions hold the channel")
        assert any("no longer holds the deposits of channel" in formatEvent(e)
                   and e["log_level"] == LogLevel.critical for e in events)
        with pytest.raises(FailedPrecondition, match="no longer holds this channel's deposits"):
            await alice.client.send(cid, ((ETH, 1),))
        with pytest.raises(FailedPrecondition, match="no longer holds"):
            await alice.client.close(cid)
        with pytest.raises(FailedPrecondition, match="no longer holds"):
            await bob.client.send(cid, ((ETH, -1),))
        # A peer whose node has not noticed (here: bob's, made to forget) is refused by ours:
        # alice's user never hears of money the chain does not hold.
        assert bob.missing_deposits is not None
        held, bob.missing_deposits.held = bob.missing_deposits.held, {}
        with pytest.raises(PeerRejected, match="no longer holds this channel's deposits"):
            await bob.client.send(cid, ((ETH, -1),))
        bob.missing_deposits.held = held
        assert alice.client.channels[cid].version == paid.version
        assert "cannot tell whose share is missing" in str(
            alice.missing_deposits and alice.missing_deposits.refusal(cid))

        # The deposit is made again (as a reorganisation would mine it again): released.
        await node.chain.deposit(alice.account, cid, 0, ETH, ETHER)
        await _until(lambda: not any(s.missing_deposits and s.missing_deposits.held
                                     for s in (alice, bob)), "both sessions release it")
        paid = await alice.client.send(cid, ((ETH, ETHER // 4),))
        assert paid.latest.balances == ((ETHER // 2, ETHER // 2),)


@pytest.mark.anvil
@pytest_twisted.ensureDeferred
async def test_a_channel_whose_funding_failed_before_any_deposit_does_not_block_the_start(
        anvil: Anvil, anvil_setup: Generated) -> None:
    """alice opens a channel with an empty account: her deposit fails before anything is
    deposited, and the channel settles with nothing on the chain. The node's next start
    must not take that for a reset chain (it used to refuse to start until the operator gave
    up every channel with --accept-lost-channels)."""
    config = load_node_config(anvil_setup.node_config)
    first = await started(config)
    alice, bob = await open_pair(first, anvil_setup)
    auto_answer(bob)
    bob_address = alice.contacts.by_alias("bob").off_chain_address
    account = alice.account.checksum_address
    balance = await first.chain.balance(alice.account.address)
    await deferToThread(_anvil_rpc, anvil.url, "anvil_setBalance", [account, "0x0"])
    try:
        try:
            with pytest.raises(InsufficientFunds, match=r"^our deposit failed: "):
                await alice.client.open_channel(
                    OpenRequest(bob_address, (ETH,), ((ETHER, 0),), 600))
            [channel] = alice.client.channels.values()
            assert channel.phase is Phase.CLOSING and channel.unfunded
        finally:
            await first.stopService()

        async with running(config) as second:
            sessions = {s.account.address: s for s in second.sessions.values()}
            restored = sessions[alice.account.address].client.channels[channel.channel_id]
            assert restored.phase is Phase.CLOSING and restored.unfunded
            assert await second.chain.holdings(channel.channel_id) == (0, 0)
    finally:
        await deferToThread(_anvil_rpc, anvil.url, "anvil_setBalance", [account, hex(balance)])


@pytest.mark.anvil
@pytest_twisted.ensureDeferred
async def test_a_restarted_node_opens_its_sessions_again(anvil_setup: Generated) -> None:
    """Sessions open when the node stops (or dies) are opened again at its start, so their
    channels are watched without waiting for a user; one its user closed is not."""
    config = load_node_config(anvil_setup.node_config)
    alice_file, bob_file = (str(u.session_file) for u in anvil_setup.users)

    first = await started(config)
    alice_id = (await first.open_session(alice_file)).id
    bob = await first.open_session(bob_file)
    assert first.credentials is not None
    _, alice_token = first.credentials.issue(alice_id, Scope.SESSION, "phone")
    _, bob_token = first.credentials.issue(bob.id, Scope.READ)
    await first.close_session(bob.id, force=True)  # bob's user closed his
    assert first.credentials.authenticate(bob_token) is None
    await first.stopService()
    assert alice_token not in first.sessions_file.read_text()  # digests only
    assert first.sessions_file.stat().st_mode & 0o077 == 0

    async with running(config) as second:
        (alice,) = second.sessions.values()
        assert alice.config.path.resolve() == anvil_setup.users[0].session_file.resolve()
        assert alice.id == alice_id  # the same ID: clients and credentials go on working
        assert second.credentials is not None
        credential = second.credentials.authenticate(alice_token)
        assert credential is not None and credential.session_id == alice_id
        assert credential.label == "phone"
        assert second.credentials.authenticate(bob_token) is None
        with pytest.raises(ResourceExists) as again:
            await second.open_session(alice_file)
        assert again.value.data["id"] == "0x" + alice.id
        assert alice.watcher.polls >= 1  # watching since the start

    # A damaged record of the open sessions: the node starts anyway, and opens none.
    second.sessions_file.write_text("{not json", encoding="utf-8")
    async with running(config) as third:
        assert third.sessions == {}


@pytest.mark.anvil
@pytest_twisted.ensureDeferred
async def test_a_session_that_cannot_reopen_stays_remembered(anvil_setup: Generated) -> None:
    """A session whose files are missing at start is not forgotten when another session opens
    or closes: it opens again, with its ID and credentials, once its files are back."""
    config = load_node_config(anvil_setup.node_config)
    alice_file = anvil_setup.users[0].session_file
    bob_file = str(anvil_setup.users[1].session_file)

    first = await started(config)
    alice_id = (await first.open_session(str(alice_file))).id
    assert first.credentials is not None
    _, token = first.credentials.issue(alice_id, Scope.SESSION)
    await first.stopService()

    hidden = alice_file.with_name("hidden.yaml")
    alice_file.rename(hidden)
    async with running(config) as second:
        assert second.sessions == {}
        bob = await second.open_session(bob_file)  # rewrites the record
        await second.close_session(bob.id, force=True)

    hidden.rename(alice_file)
    async with running(config) as third:
        (alice,) = third.sessions.values()
        assert alice.id == alice_id
        assert third.credentials is not None and third.credentials.authenticate(token)


@pytest.mark.anvil
@pytest_twisted.ensureDeferred
async def test_a_session_the_chain_failed_at_start_is_opened_again_soon(
        anvil_setup: Generated, monkeypatch: pytest.MonkeyPatch) -> None:
    """The start's chain check met an error of the chain node (the chain review: two HTTP
    502s left the session closed for good while the peer settled an old state on-chain). The
    node starts, counts the session as waiting, and opens it at the retry."""
    from perund import reopening
    from perund.session import session as session_module

    config = load_node_config(anvil_setup.node_config)
    first = await started(config)
    alice_id = (await first.open_session(str(anvil_setup.users[0].session_file))).id
    await first.stopService()

    real = session_module.shortfalls
    failures = [2]

    async def flaky(*args: object, **kwargs: object) -> object:
        if failures[0]:
            failures[0] -= 1
            raise ChainRpcError("eth_call", -32000, "header not found")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(session_module, "shortfalls", flaky)
    monkeypatch.setattr(reopening, "FIRST_RETRY", 0.3)
    async with running(config) as second:
        assert second.sessions == {}
        waiting = {s.name: s.value for s in second.exposition.samples()}
        assert waiting["perund_sessions_reopen_waiting"] == 1
        await _until(lambda: bool(second.sessions), "the session opened at a retry")
        (alice,) = second.sessions.values()
        assert alice.id == alice_id and failures == [0]
        waiting = {s.name: s.value for s in second.exposition.samples()}
        assert waiting["perund_sessions_reopen_waiting"] == 0


@pytest.mark.anvil
@pytest_twisted.ensureDeferred
async def test_a_session_whose_peer_port_is_busy_at_start_is_opened_again_soon(
        anvil_setup: Generated, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another socket holds alice's peer port when the node starts (an audit: 40 s of it left
    her session, a channel of hers in dispute, closed until someone opened it by hand): the
    session waits, and opens at a retry once the port is free."""
    from perund import reopening

    config = load_node_config(anvil_setup.node_config)
    first = await started(config)
    alice_id = (await first.open_session(str(anvil_setup.users[0].session_file))).id
    await first.stopService()

    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", anvil_setup.users[0].comm_port))
    holder.listen(1)
    monkeypatch.setattr(reopening, "FIRST_RETRY", 0.3)
    try:
        async with running(config) as second:
            assert second.sessions == {}
            waiting = {s.name: s.value for s in second.exposition.samples()}
            assert waiting["perund_sessions_reopen_waiting"] == 1
            holder.close()
            await _until(lambda: bool(second.sessions), "the session opened at a retry")
            (alice,) = second.sessions.values()
            assert alice.id == alice_id
    finally:
        holder.close()


@pytest_twisted.ensureDeferred
async def test_a_session_with_a_full_disk_closes_and_opens_again(
        node: NodeService, setup: Generated, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = await open_pair(node, setup)
    auto_answer(bob)
    bob_address = alice.contacts.by_alias("bob").off_chain_address
    channel = await alice.client.open_channel(OpenRequest(bob_address, (ETH,), ((ETHER, 0),),
                                                          600))
    await alice.client.send(channel.channel_id, ((ETH, 1),))

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    # bob's node, on the same full disk, never answers: alice's request times out, and the
    # write that records the timeout meets her broken store.
    alice.client.response_timeout = alice.client.request_timeout = 1.0
    with monkeypatch.context() as patched:
        patched.setattr(os, "fsync", disk_full)
        with pytest.raises(FailedPrecondition, match="store failed"):
            await alice.client.send(channel.channel_id, ((ETH, 1),))
        gauges = {s.name: s.value for s in node.exposition.samples()}
        failed = gauges["perund_sessions_store_failed"]
        # bob's session shares the disk, and his write, the payee's, is the one the payment
        # waits for (docs/protocol.md, "Durability by interest"): both are broken.
        assert failed == 2
        await node.close_session(alice.id, force=True)  # logged, not raised
    # The disk is fixed: the store is repaired on open, the channel is where it was durable.
    again = await node.open_session(str(setup.users[0].session_file))
    (restored,) = again.restored
    assert restored.latest.version == 1


@pytest_twisted.ensureDeferred
async def test_a_taken_peer_port_fails_the_open_with_a_config_error(
        node: NodeService, setup: Generated) -> None:
    session_file = setup.users[0].session_file
    listen = yaml.safe_load(session_file.read_text())["comm"]["listen"]
    port = int(listen.split(":")[1])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(InvalidConfig) as caught:
            await node.open_session(str(session_file))
    assert caught.value.data["name"] == "comm.listen" and "in use" in str(caught.value)
    assert node.sessions == {}
    opened = await node.open_session(str(session_file))  # the port is free again
    assert opened.peers.port == port


@pytest_twisted.ensureDeferred
async def test_an_intermediary_fee_is_resolved_against_the_nodes_currencies_at_open(
        node: NodeService, setup: Generated) -> None:
    session_file = setup.users[0].session_file
    original = yaml.safe_load(session_file.read_text())
    for fee, message in (({"XYZ": {"ppm": 1}}, "intermediary.fee.XYZ: unknown currency"),
                         ({"ETH": {"base": "0.0000000000000000001"}},
                          "intermediary.fee.ETH.base: at most 18 decimal places")):
        session_file.write_text(yaml.safe_dump(
            {**original, "intermediary": {"enabled": True, "fee": fee}}))
        with pytest.raises(InvalidConfig, match=message):
            await node.open_session(str(session_file))
        assert node.sessions == {}
    session_file.write_text(yaml.safe_dump(
        {**original, "intermediary": {"enabled": True, "fee": {"ETH": {"base": "0.0001",
                                                                      "ppm": 1000}}}}))
    session = await node.open_session(str(session_file))
    assert session.client.intermediary.schedule == {ETH: FeeTerms(10**14, 1000)}
    api = NodeAPI(node)
    (listed,) = await api.session_list()
    assert listed.to_json()["intermediary"] == {
        "lockWindow": 10.0, "fee": {"ETH": {"base": "0.0001", "ppm": 1000}}}
    sid = bytes.fromhex(session.id)
    peer = setup.users[1].name
    with pytest.raises(InvalidArgument, match="maxFee limits an intermediary's fee"):
        await api.channel_open(sid, peer, {ETH: (ETHER, 0)}, None, None, {ETH: 1})
    for token in [c for c in node.currencies if c.symbol != "ETH"][:1]:
        with pytest.raises(InvalidArgument, match=f"maxFee names {token.symbol}, which the "
                                                   "channel does not hold"):
            await api.channel_open(sid, peer, {ETH: (ETHER, 0)}, None, peer, {token.asset: 1})
    with pytest.raises(InvalidArgument) as caught:
        await api.channel_open(sid, peer, {ETH: (ETHER, 0)}, None, "0x" + "00" * 20)
    assert caught.value.data["name"] == "via"  # not the peer, which is fine
