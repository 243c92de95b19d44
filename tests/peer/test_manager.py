"""PeerManager over real loopback TCP: dialling, correlation, timeouts, drops, restarts, races."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import LogEvent, capturedLogs, formatEvent, globalLogPublisher

from perund.channel.encoding import Signer
from perund.channel.types import ETH, Address, ChannelID, Signature, State, hex_address
from perund.errors import (
    FailedPrecondition,
    InvalidArgument,
    InvalidConfig,
    PeerDisconnected,
    PeerRequestTimedOut,
    PeerUnreachable,
)
from perund.peer.admission import PeerLimits
from perund.peer.manager import PeerManager
from perund.peer.table import SESSION_CLOSED
from perund.wire.codec import encode
from perund.wire.messages import (
    PROTOCOL_VERSION,
    Hello,
    Message,
    Ping,
    Pong,
    Reject,
    Update,
    UpdateAccept,
    UpdateReject,
)
from perund.wire.protocol import HandshakeState, PeerProtocol

ALICE = Signer(b"\x11" * 32)
BOB = Signer(b"\x22" * 32)
CAROL = Signer(b"\x33" * 32)
CHANNEL = ChannelID(b"\xcc" * 32)
SIG = Signature(b"\x01" * 65)


def update(version: int) -> Update:
    return Update(State(CHANNEL, version, (ETH,), ((10**18, 10**18),), False), SIG)


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds)


async def until(condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Wait for `condition` (polling); fail the test if it does not hold within `limit` s."""
    waited = 0.0
    while not condition():
        if waited >= limit:
            raise AssertionError(f"gave up waiting for: {what}")
        await sleep(0.01)
        waited += 0.01


class Node:
    """One PeerManager plus everything it told its owner (this node)."""

    def __init__(self, net: Net, signer: Signer, **options: Any) -> None:
        self.net = net
        self.signer = signer
        self.address = signer.address
        self.options = options
        self.received: list[tuple[Address, Message]] = []
        self.connected: list[Address] = []
        self.disconnected: list[Address] = []
        self.relinked: list[Address] = []
        self.handler: Callable[[Node, Address, Message], object] | None = None
        self.manager = self._make_manager(listen="tcp:0:interface=127.0.0.1")

    def _make_manager(self, listen: str) -> PeerManager:
        options = {
            "dial_timeout": 3.0,
            "handshake_timeout": 2.0,
            "backoff_initial": 0.02,
            "backoff_max": 0.2,
            "keepalive_interval": None,
        }
        options.update(self.options)
        return PeerManager(
            reactor,
            self.signer,
            self.net.resolve,
            listen,
            owner=self,
            **options,
        )

    # -- the PeerManagerOwner it is ---------------------------------------------------------

    def peer_connected(self, peer: Address) -> None:
        self.connected.append(peer)

    def peer_disconnected(self, peer: Address) -> None:
        self.disconnected.append(peer)

    def peer_relinked(self, peer: Address) -> None:
        self.relinked.append(peer)

    def message_received(self, peer: Address, msg: Message) -> None:
        self.received.append((peer, msg))
        if self.handler is not None:
            self.handler(self, peer, msg)

    async def start(self) -> None:
        port = await self.manager.listen()
        assert port is not None
        self.net.ports[self.address] = port

    async def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down for a while, and listen again on the same port."""
        port = self.net.ports[self.address]
        await self.manager.stop()
        await sleep(down_for)
        self.manager = self._make_manager(listen=f"tcp:{port}:interface=127.0.0.1")
        await self.start()


class Net:
    """The contacts: address -> endpoint string of that node's listener."""

    def __init__(self) -> None:
        self.ports: dict[Address, int] = {}
        self.nodes: list[Node] = []
        self.overrides: dict[Address, str | None] = {}
        self.errors_expected = False

    def resolve(self, address: Address) -> str | None:
        if address in self.overrides:
            return self.overrides[address]
        port = self.ports.get(address)
        return None if port is None else f"tcp:host=127.0.0.1:port={port}"

    async def node(self, signer: Signer, **options: Any) -> Node:
        node = Node(self, signer, **options)
        self.nodes.append(node)
        await node.start()
        return node


@pytest_twisted.async_yield_fixture
async def net() -> AsyncIterator[Net]:
    """The network of a test; fails the test if anything logged an unexpected error."""
    network = Net()
    errors: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield network
        for node in network.nodes:
            await node.manager.stop()
        gc.collect()  # an unhandled failed Deferred logs when it is collected
    finally:
        globalLogPublisher.removeObserver(observe)
    unexpected = [formatEvent(e) for e in errors if not network.errors_expected]
    assert unexpected == []


def answer_updates(node: Node, peer: Address, msg: Message) -> None:
    """A peer that countersigns every update (what the channel client will do)."""
    if isinstance(msg, Update):
        node.manager.respond(peer, UpdateAccept(msg.channel_id, msg.version, SIG))


# -- dialling and correlation -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_send_dials_on_demand(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    assert not alice.manager.is_connected(BOB.address)
    await alice.manager.send(BOB.address, Reject(b"\x01" * 32, "hello"))
    await until(lambda: bob.received != [], "Bob receives the message")
    assert bob.received == [(ALICE.address, Reject(b"\x01" * 32, "hello"))]
    assert alice.connected == [BOB.address]
    await until(lambda: bob.connected == [ALICE.address], "Bob sees Alice connected")
    assert alice.manager.connected_peers() == [BOB.address]
    # The connection is reused: a second send does not dial again.
    await alice.manager.send(BOB.address, Reject(b"\x02" * 32, "again"))
    await until(lambda: len(bob.received) == 2, "second message")
    assert alice.connected == [BOB.address]
    assert alice.manager.connection_count(BOB.address) == 1


@pytest_twisted.ensureDeferred
async def test_post_writes_on_the_connection_or_dials_and_logs_what_fails(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    alice.manager.post(BOB.address, Reject(b"\x01" * 32, "dialled"))  # no connection yet
    await until(lambda: bob.received != [], "Bob receives the posted message")
    alice.manager.post(BOB.address, Reject(b"\x02" * 32, "on the connection"))
    await until(lambda: len(bob.received) == 2, "the second one, on the same connection")
    assert [m for _, m in bob.received] == [Reject(b"\x01" * 32, "dialled"),
                                           Reject(b"\x02" * 32, "on the connection")]
    assert alice.manager.connection_count(BOB.address) == 1
    with capturedLogs() as events:
        alice.manager.post(CAROL.address, Ping(b""))  # no endpoint known: nothing raises
        await until(lambda: any("not delivered" in formatEvent(e) for e in events),
                    "the loss is logged")
    assert any("no endpoint is known" in formatEvent(e) for e in events)


@pytest_twisted.ensureDeferred
async def test_a_taken_listen_port_is_a_config_error_naming_it(net: Net) -> None:
    alice = await net.node(ALICE)
    taken = f"tcp:{net.ports[ALICE.address]}:interface=127.0.0.1"
    second = PeerManager(reactor, BOB, net.resolve, taken)
    with pytest.raises(InvalidConfig) as raised:
        await second.listen()
    assert raised.value.data["name"] == "comm.listen"
    assert raised.value.data["value"] == taken
    assert "in use" in str(raised.value)
    assert alice.manager.port == net.ports[ALICE.address]  # the holder is not disturbed


@pytest_twisted.ensureDeferred
async def test_request_is_correlated_with_its_response(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    bob.handler = answer_updates
    responses = [await alice.manager.request(BOB.address, update(v), 5.0) for v in (1, 2, 3)]
    assert responses == [UpdateAccept(CHANNEL, v, SIG) for v in (1, 2, 3)]
    assert alice.received == []  # responses resolve requests; they are not unsolicited


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_are_matched_by_key_not_order(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    held: list[Update] = []

    def answer_in_reverse(node: Node, peer: Address, msg: Message) -> None:
        assert isinstance(msg, Update)
        held.append(msg)
        if len(held) == 3:
            for u in reversed(held):
                node.manager.respond(peer, UpdateReject(u.channel_id, u.version, f"no {u.version}"))

    bob.handler = answer_in_reverse
    requests = [alice.manager.request(BOB.address, update(v), 5.0) for v in (1, 2, 3)]
    results = [await d for d in requests]
    assert results == [UpdateReject(CHANNEL, v, f"no {v}") for v in (1, 2, 3)]


@pytest_twisted.ensureDeferred
async def test_response_from_another_peer_does_not_match(net: Net) -> None:
    alice, bob, carol = await net.node(ALICE), await net.node(BOB), await net.node(CAROL)
    outcome: list[object] = []
    alice.manager.request(BOB.address, update(1), 5.0).addBoth(outcome.append)
    await until(lambda: bob.received != [], "Bob has the update")
    # Carol forges Bob's answer: it is hers, so it is handed over as an unsolicited message.
    await carol.manager.send(ALICE.address, UpdateAccept(CHANNEL, 1, SIG))
    await until(lambda: alice.received != [], "Alice receives Carol's message")
    assert alice.received == [(CAROL.address, UpdateAccept(CHANNEL, 1, SIG))]
    assert outcome == []
    await bob.manager.respond(ALICE.address, UpdateAccept(CHANNEL, 1, SIG))
    await until(lambda: outcome != [], "Bob's answer resolves the request")
    assert outcome == [UpdateAccept(CHANNEL, 1, SIG)]


@pytest_twisted.ensureDeferred
async def test_ping(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    await alice.manager.ping(BOB.address, 5.0)
    assert bob.received == []  # answered by the protocol itself


@pytest_twisted.ensureDeferred
async def test_request_needs_a_request_message(net: Net) -> None:
    alice, _ = await net.node(ALICE), await net.node(BOB)
    with pytest.raises(InvalidArgument):
        await alice.manager.request(BOB.address, Pong(b""), 1.0)


@pytest_twisted.ensureDeferred
async def test_sending_to_ourselves_is_refused(net: Net) -> None:
    alice = await net.node(ALICE)
    with pytest.raises(InvalidArgument):
        await alice.manager.send(ALICE.address, Ping(b""))


@pytest_twisted.ensureDeferred
async def test_duplicate_pending_key_is_refused(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    first = alice.manager.request(BOB.address, update(1), 5.0)
    with pytest.raises(FailedPrecondition):
        await alice.manager.request(BOB.address, update(1), 5.0)
    await until(lambda: bob.received != [], "Bob has the update")
    await bob.manager.respond(ALICE.address, UpdateAccept(CHANNEL, 1, SIG))
    assert await first == UpdateAccept(CHANNEL, 1, SIG)


# -- timeouts and failures ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_request_times_out_and_a_late_answer_is_unsolicited(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    with pytest.raises(PeerRequestTimedOut) as info:
        await alice.manager.request(BOB.address, update(1), 0.2)
    assert not isinstance(info.value, PeerDisconnected | PeerUnreachable)
    assert info.value.data == {"peer": "0x" + BOB.address.hex(), "timeout": 0.2}
    # The message names the peer as its reader knows it: checksummed, or as the session's
    # contacts name it.
    assert str(info.value) \
        == f"peer {hex_address(BOB.address)} did not answer a Update within 0.2 s"
    alice.manager.name_of = lambda address: f"bob ({hex_address(address)})"
    with pytest.raises(PeerRequestTimedOut, match=r"^peer bob \(0x[0-9a-fA-F]{40}\) did not"):
        await alice.manager.request(BOB.address, update(2), 0.1)
    await bob.manager.respond(ALICE.address, UpdateAccept(CHANNEL, 1, SIG))
    await until(lambda: alice.received != [], "the late answer reaches the owner")
    assert alice.received == [(BOB.address, UpdateAccept(CHANNEL, 1, SIG))]
    assert alice.manager.is_connected(BOB.address)  # a timeout does not drop the connection


@pytest_twisted.ensureDeferred
async def test_an_answered_failed_or_cancelled_request_leaves_no_deadline(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    answered = alice.manager.request(BOB.address, update(1), 30.0)
    await until(lambda: bob.received != [], "Bob has the update")
    await bob.manager.respond(ALICE.address, UpdateAccept(CHANNEL, 1, SIG))
    await answered
    cancelled = alice.manager.request(BOB.address, update(2), 30.0)
    cancelled.addErrback(lambda _: None)
    cancelled.cancel()
    dropped = alice.manager.request(BOB.address, update(3), 30.0)
    dropped.addErrback(lambda _: None)
    await until(lambda: len(bob.received) == 3, "Bob has all three")
    await bob.manager.disconnect(ALICE.address)
    await until(lambda: dropped.called, "the third fails")
    assert len(alice.manager._deadlines) == 0


@pytest_twisted.ensureDeferred
async def test_every_pending_request_fails_at_once_when_the_connection_drops(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    requests = [alice.manager.request(BOB.address, update(v), 30.0) for v in (1, 2, 3)]
    failures: list[Exception] = []
    for d in requests:
        d.addErrback(lambda f: failures.append(f.value))
    await until(lambda: len(bob.received) == 3, "Bob has all three updates")
    await bob.manager.disconnect(ALICE.address)
    await until(lambda: len(failures) == 3, "all three requests fail")
    assert all(isinstance(f, PeerDisconnected) for f in failures)
    assert isinstance(failures[0], PeerRequestTimedOut)  # same API code: the peer did not answer
    assert alice.disconnected == [BOB.address]
    assert not alice.manager.is_connected(BOB.address)


@pytest_twisted.ensureDeferred
async def test_unknown_peer_is_unreachable_at_once(net: Net) -> None:
    alice = await net.node(ALICE)
    with pytest.raises(PeerUnreachable, match="no endpoint is known"):
        await alice.manager.send(BOB.address, Ping(b""))


@pytest_twisted.ensureDeferred
async def test_dial_gives_up_at_the_deadline(net: Net) -> None:
    alice = await net.node(ALICE, dial_timeout=0.5)
    bob = await net.node(BOB)
    await bob.manager.stop()  # Bob's port is known but nobody listens there any more
    with (
        capturedLogs() as events,
        pytest.raises(PeerUnreachable, match=r"no authenticated connection within 0\.5 s"),
    ):
        await alice.manager.send(BOB.address, Ping(b""))
    attempts = [e for e in events if "dialling peer" in formatEvent(e)]
    assert len(attempts) == 1  # the first failure; the ones after it are counted
    # It retried with backoff before giving up.
    assert alice.manager._peers[BOB.address].dial_failures.failed >= 2


@pytest_twisted.ensureDeferred
async def test_dialling_an_impostor_fails(net: Net) -> None:
    alice, _bob, carol = (
        await net.node(ALICE, dial_timeout=0.5),
        await net.node(BOB),
        await net.node(CAROL),
    )
    # The contacts say Bob is at Carol's endpoint: Carol cannot prove she is Bob.
    net.overrides[BOB.address] = net.resolve(CAROL.address)
    with pytest.raises(PeerUnreachable):
        await alice.manager.send(BOB.address, Ping(b""))
    assert carol.connected == []
    assert not alice.manager.is_connected(CAROL.address)


@pytest_twisted.ensureDeferred
async def test_stop_fails_pending_requests_and_closes_everything(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    pending = alice.manager.request(BOB.address, update(1), 30.0)
    await until(lambda: bob.received != [], "Bob has the update")
    await alice.manager.stop()
    with pytest.raises(PeerDisconnected, match="this node stopped before the response came"):
        await pending
    with pytest.raises(PeerUnreachable, match="unreachable: this node stopped"):
        await alice.manager.send(BOB.address, Ping(b""))
    await until(lambda: bob.disconnected == [ALICE.address], "Bob sees Alice go")


@pytest_twisted.ensureDeferred
async def test_a_stop_for_a_closed_session_says_so_to_what_waited(net: Net) -> None:
    """The session closed while the node runs on: a request cut short and a send waiting for
    a dial are told so, not that the node stopped."""
    alice, bob, carol = await net.node(ALICE), await net.node(BOB), await net.node(CAROL)
    pending = alice.manager.request(BOB.address, update(1), 30.0)
    await until(lambda: bob.received != [], "Bob has the update")
    await carol.manager.stop()  # Carol's port is known but nobody listens there any more
    dialling = alice.manager.send(CAROL.address, Ping(b""))
    await alice.manager.stop(SESSION_CLOSED)
    with pytest.raises(PeerDisconnected,
                       match="the session was closed before the response came"):
        await pending
    with pytest.raises(PeerUnreachable, match="unreachable: the session was closed"):
        await dialling


@pytest_twisted.ensureDeferred
async def test_handler_errors_are_logged_and_the_connection_survives(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)

    def broken(node: Node, peer: Address, msg: Message) -> None:
        if isinstance(msg, Reject):
            raise RuntimeError("owner bug")
        answer_updates(node, peer, msg)

    bob.handler = broken
    net.errors_expected = True
    with capturedLogs() as events:
        await alice.manager.send(BOB.address, Reject(b"\x01" * 32, "boom"))
        await until(lambda: bob.received != [], "Bob receives it")
    assert any("message_received failed" in formatEvent(e) for e in events)
    assert await alice.manager.request(BOB.address, update(1), 5.0) == UpdateAccept(CHANNEL, 1, SIG)


# -- reconnects, restarts and races -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_keep_connected_reconnects_with_backoff_after_a_restart(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    bob.handler = answer_updates
    alice.manager.keep_connected(BOB.address, True)
    await until(lambda: alice.manager.is_connected(BOB.address), "first connection")
    assert alice.connected == [BOB.address]

    with capturedLogs() as events:
        await bob.restart(down_for=0.5)
        await until(lambda: len(alice.connected) == 2, "Alice reconnects to the new Bob")
    assert alice.disconnected == [BOB.address]
    failed = [e for e in events if "dialling peer" in formatEvent(e)]
    assert len(failed) == 1  # the first refusal; the rest within a minute are only counted
    reached = [e for e in events if "reached again" in formatEvent(e)]
    assert len(reached) == 1 and reached[0]["failed"] >= 2, [formatEvent(e) for e in reached]
    assert formatEvent(reached[0]).startswith(  # refused while Bob was down, retried
        f"peer 0x{BOB.address.hex()} reached again, after {reached[0]['failed']} failed dials "
        "over ")
    bob.handler = answer_updates
    assert await alice.manager.request(BOB.address, update(9), 5.0) == UpdateAccept(CHANNEL, 9, SIG)

    # Without keep_connected nothing redials after a drop (until the next send).
    alice.manager.keep_connected(BOB.address, False)
    await bob.restart()
    await until(lambda: len(alice.disconnected) == 2, "drop noticed")
    await sleep(0.3)
    assert not alice.manager.is_connected(BOB.address)
    assert len(alice.connected) == 2


@pytest_twisted.ensureDeferred
async def test_keep_connected_waits_for_a_peer_that_is_down(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    port = net.ports[BOB.address]
    await bob.manager.stop()
    alice.manager.keep_connected(BOB.address, True)
    await sleep(0.5)  # several refused attempts, each followed by a longer pause
    assert not alice.manager.is_connected(BOB.address)
    bob.manager = bob._make_manager(listen=f"tcp:{port}:interface=127.0.0.1")
    await bob.start()
    await until(lambda: alice.manager.is_connected(BOB.address), "connected once Bob is up")


@pytest_twisted.ensureDeferred
async def test_simultaneous_dials_resolve_to_one_connection_without_losing_messages(
    net: Net,
) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    crossed = 0
    for round_ in range(5):
        # Both sides send at once, neither connected: two dials cross on the wire.
        sends = []
        authenticated = 0
        for i in range(10):
            sends.append(alice.manager.send(BOB.address, Reject(bytes([round_, i]) * 16, "a")))
            sends.append(bob.manager.send(ALICE.address, Reject(bytes([round_, i]) * 16, "b")))
        with capturedLogs() as events:
            for d in sends:
                await d
        authenticated = sum("authenticated peer" in formatEvent(e) for e in events)
        crossed += authenticated == 4  # both dials completed the handshake on both ends
        expected = 10 * (round_ + 1)
        await until(
            lambda: len(alice.received) == len(bob.received) == expected,  # noqa: B023
            "every message arrives",
        )
        await until(
            lambda: (
                alice.manager.connection_count(BOB.address) == 1
                and bob.manager.connection_count(ALICE.address) == 1
            ),
            "one connection left on each side",
        )
        a_conn = alice.manager.current_connection(BOB.address)
        b_conn = bob.manager.current_connection(ALICE.address)
        assert a_conn is not None and b_conn is not None
        assert a_conn.dialled_by == b_conn.dialled_by == min(ALICE.address, BOB.address)
        assert a_conn.transport is not None and b_conn.transport is not None
        assert a_conn.transport.getHost() == b_conn.transport.getPeer()  # the same TCP connection
        assert alice.connected.count(BOB.address) == round_ + 1
        await alice.manager.disconnect(BOB.address)
        await until(
            lambda: not bob.manager.is_connected(ALICE.address), "disconnected before next round"
        )
    assert crossed > 0  # the race this test is about really happened


@pytest_twisted.ensureDeferred
async def test_peer_reconnecting_behind_a_silent_connection_replaces_it(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    bob.handler = answer_updates
    await alice.manager.ping(BOB.address, 5.0)
    await until(lambda: bob.manager.is_connected(ALICE.address), "connected")
    old = bob.manager.current_connection(ALICE.address)
    # Alice loses her connection without Bob noticing (as after a crash behind a NAT), and
    # dials again: Bob must switch to the new connection and drop the old one.
    a_conn = alice.manager.current_connection(BOB.address)
    assert a_conn is not None
    alice.manager._drop(alice.manager._peers[BOB.address], a_conn, "test: forgotten")
    assert await alice.manager.request(BOB.address, update(1), 5.0) == UpdateAccept(CHANNEL, 1, SIG)
    await until(lambda: bob.manager.current_connection(ALICE.address) is not old, "Bob switched")
    assert bob.manager.connection_count(ALICE.address) == 1


@pytest_twisted.ensureDeferred
async def test_the_higher_side_hears_when_the_lower_sides_dial_replaces_its_own(net: Net) -> None:
    """The lower side restarts behind the higher side's dial (no FIN reaches the higher side)
    and dials again: the higher side switches to that dial while its own is still up, and
    tells its owner, which cannot otherwise know the peer waits for an answer there."""
    low_signer, high_signer = sorted((ALICE, BOB), key=lambda s: s.address)
    low = await net.node(low_signer)
    high = await net.node(high_signer)
    low.handler = answer_updates
    await high.manager.ping(low.address, 5.0)  # high dials: its own connection is in use
    await until(lambda: low.manager.is_connected(high.address), "connected")
    assert high.connected == [low.address] and high.relinked == []
    stale = low.manager.current_connection(high.address)
    assert stale is not None
    stale.state = HandshakeState.CLOSED  # the old process reads nothing more
    low.manager._drop(low.manager._peers[high.address], stale, "test: restarted")
    await low.manager.ping(high.address, 5.0)  # the lower side's dial, preferred by both
    await until(lambda: high.relinked == [low.address], "the higher side hears of the switch")
    assert high.connected == [low.address] and high.disconnected == []
    assert await high.manager.request(low.address, update(3), 5.0) == UpdateAccept(CHANNEL, 3, SIG)
    await until(lambda: high.manager.connection_count(low.address) == 1, "its own dial closed")


# -- hostile peers ------------------------------------------------------------------------------


class RawClient(Protocol):
    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(None)


async def raw_connect(port: int, source: str | None = None) -> RawClient:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port,
                                  bindAddress=None if source is None else (source, 0))
    proto: RawClient = await endpoint.connect(Factory.forProtocol(RawClient))
    return proto


@pytest_twisted.ensureDeferred
async def test_a_flood_of_connections_that_never_authenticate_is_capped(net: Net) -> None:
    bob = await net.node(BOB, handshake_timeout=3.0)  # longer than opening the flood takes
    port = net.ports[BOB.address]
    per_host = PeerLimits().handshakes_per_host
    flood = [await raw_connect(port) for _ in range(per_host + 4)]
    await until(lambda: sum(c.closed.called for c in flood) >= 4, "the excess is closed")
    assert sum(not c.closed.called for c in flood) == per_host
    # Once the handshake deadline has dropped them, a real peer gets in again.
    await until(lambda: all(c.closed.called for c in flood), "the deadline drops them", 10.0)
    alice = await net.node(ALICE)
    await alice.manager.ping(BOB.address, 5.0)
    assert bob.manager.is_connected(ALICE.address)


@pytest_twisted.ensureDeferred
async def test_silent_connections_give_way_to_a_real_peer_at_the_cap(net: Net) -> None:
    """At the cap of connections in their handshake, the oldest of the host holding the most
    is closed for a newcomer (an audit: 256 silent connections from 16 hosts, renewed at each
    deadline, locked every real peer out); when every host holds one, the oldest is closed only
    once past its shield (tests/peer/test_handshake_slots.py), so a newcomer right after them
    is refused."""
    bob = await net.node(BOB, handshake_timeout=5.0, limits=PeerLimits(
        handshakes=6, handshakes_per_host=6))
    port = net.ports[BOB.address]
    flood = [await raw_connect(port, "127.0.0.2") for _ in range(6)]
    await sleep(0.1)
    assert not any(c.closed.called for c in flood)
    alice = await net.node(ALICE)
    await alice.manager.ping(BOB.address, 3.0)  # let in: the flood's oldest gave way
    assert bob.manager.is_connected(ALICE.address)
    await until(lambda: flood[0].closed.called, "the oldest silent connection is closed")
    assert not any(c.closed.called for c in flood[1:])
    for c in flood:
        c.transport.abortConnection()
    spread = [await raw_connect(port, f"127.0.0.{10 + i}") for i in range(6)]
    await sleep(0.1)
    late = await raw_connect(port, "127.0.0.3")
    await until(lambda: late.closed.called,
                "the newcomer is refused: each host holds one, all shielded")
    assert not any(c.closed.called for c in spread)
    for c in spread:
        c.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_connections_that_break_the_rules_in_bulk_log_a_few_lines(net: Net) -> None:
    """Each connection that sends garbage is dropped with its reason logged, but only the first
    50 of an interval: the rest are counted (an audit: one host made 4,000 lines a second)."""
    bob = await net.node(BOB)
    port = net.ports[BOB.address]
    with capturedLogs() as events:
        for _ in range(8):
            batch = [await raw_connect(port) for _ in range(PeerLimits().handshakes_per_host)]
            for conn in batch:
                conn.transport.write(b"\x00\x00\x00\x05hello")
            for conn in batch:
                await conn.closed
    drops = [e for e in events if "dropping peer connection" in formatEvent(e)]
    assert len(drops) == 50
    assert bob.manager.violation_lines.suppressed == 8 * PeerLimits().handshakes_per_host - 50


@pytest_twisted.ensureDeferred
async def test_a_strangers_connection_reads_small_frames_only(net: Net) -> None:
    """A stranger's messages are refused or small questions, and large frames cost the
    reactor to decode (an audit): its connection reads at most STRANGER_FRAME_SIZE; a
    contact's the full limit."""
    from perund.wire.limits import STRANGER_FRAME_SIZE

    alice, bob = await net.node(ALICE), await net.node(BOB)
    await alice.manager.ping(BOB.address, 3.0)
    bob_endpoint = net.resolve(BOB.address)
    stranger = PeerManager(reactor, Signer(os.urandom(32)),
                           lambda a: bob_endpoint if a == BOB.address else None,
                           dial_timeout=2.0, handshake_timeout=2.0, keepalive_interval=None)
    try:
        await stranger.ping(BOB.address, 3.0)
        limits = {conn.peer_address: conn._reading_limit for conn in bob.manager._protocols}
        assert limits == {ALICE.address: bob.manager.max_frame_size,
                          stranger.address: STRANGER_FRAME_SIZE}
    finally:
        await stranger.stop()


@pytest_twisted.ensureDeferred
async def test_only_a_few_unknown_peers_stay_connected(net: Net,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    bob = await net.node(BOB, limits=PeerLimits(strangers=2))
    bob_endpoint = net.resolve(BOB.address)

    def stranger() -> PeerManager:
        return PeerManager(reactor, Signer(os.urandom(32)),
                           lambda a: bob_endpoint if a == BOB.address else None,
                           dial_timeout=2.0, handshake_timeout=2.0, keepalive_interval=None)

    strangers = [stranger() for _ in range(4)]
    try:
        await strangers[0].ping(BOB.address, 3.0)
        await strangers[1].ping(BOB.address, 3.0)
        for late in strangers[2:]:
            with pytest.raises(PeerRequestTimedOut):  # closed right after its handshake
                await late.ping(BOB.address, 3.0)
        # Known peers are not counted, and a stranger that leaves frees its place and its record.
        alice = await net.node(ALICE)
        await alice.manager.ping(BOB.address, 3.0)
        gone = strangers[0].address
        await strangers[0].stop()
        await until(lambda: gone not in bob.manager._peers, "bob forgets the stranger")
        await strangers[2].ping(BOB.address, 3.0)
    finally:
        for manager in strangers:
            await manager.stop()


@pytest_twisted.ensureDeferred
async def test_hostile_raw_clients_do_not_disturb_a_good_peer(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB, handshake_timeout=0.5)
    bob.handler = answer_updates
    port = net.ports[BOB.address]
    await alice.manager.ping(BOB.address, 5.0)

    garbage = await raw_connect(port)
    oversized = await raw_connect(port)
    silent = await raw_connect(port)
    early = await raw_connect(port)
    garbage.transport.write(b"\x00\x00\x00\x05hello" * 10)
    oversized.transport.write(struct.pack(">I", 2**31) + b"\x00" * 1000)
    early_payload = encode(update(1))
    early.transport.write(struct.pack(">I", len(early_payload)) + early_payload)
    # Meanwhile the good peer keeps paying.
    results = [await alice.manager.request(BOB.address, update(v), 5.0) for v in range(1, 51)]
    assert results == [UpdateAccept(CHANNEL, v, SIG) for v in range(1, 51)]
    for hostile in (garbage, oversized, early, silent):  # silent: dropped at the deadline
        await hostile.closed
    # Each received Bob's Hello and nothing else (no Auth: none of them sent a Hello).
    assert all(len(h.received) > 0 for h in (garbage, oversized, early, silent))
    assert [m for _, m in bob.received if not isinstance(m, Update)] == []
    assert bob.manager.connected_peers() == [ALICE.address]


@pytest_twisted.ensureDeferred
async def test_handshaking_impostor_is_dropped(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    port = net.ports[BOB.address]
    impostor = await raw_connect(port)
    hello = encode(Hello(PROTOCOL_VERSION, ALICE.address, b"\x00" * 32))  # claims to be Alice
    impostor.transport.write(struct.pack(">I", len(hello)) + hello)
    await sleep(0.05)
    bad_auth = b"\x01\x02\x91\xc4\x41" + b"\x00" * 64 + b"\x1b"
    impostor.transport.write(struct.pack(">I", len(bad_auth)) + bad_auth)
    await impostor.closed
    assert bob.connected == []
    assert await alice.manager.ping(BOB.address, 5.0) is None


class SilentPeerProtocol(PeerProtocol):
    """Authenticates, then ignores everything (a peer that hangs)."""

    def _frame(self, payload: bytes | bytearray) -> None:
        if self.peer_address is None:
            super()._frame(payload)


@pytest_twisted.ensureDeferred
async def test_keepalive_drops_a_peer_that_stopped_answering(net: Net) -> None:
    alice = await net.node(ALICE, keepalive_interval=0.2)
    bob = await net.node(BOB)
    bob.manager._build_protocol = _silent_builder(bob.manager)  # type: ignore[method-assign]
    await alice.manager.send(BOB.address, Ping(b"x"))
    await until(lambda: alice.disconnected == [BOB.address], "keepalive notices the silence")
    assert not alice.manager.is_connected(BOB.address)


def _silent_builder(manager: PeerManager) -> Callable[..., PeerProtocol | None]:
    def build(role: Any, expected: Address | None, host: str | None = None,
              ) -> PeerProtocol | None:
        conn = SilentPeerProtocol(
            manager, manager._signer, reactor, role, expected, handshake_timeout=2.0
        )
        manager._protocols.add(conn)
        return conn

    return build


@pytest_twisted.ensureDeferred
async def test_lower_side_probes_a_preferred_connection_the_peer_went_silent_on(net: Net) -> None:
    low_signer, high_signer = sorted((ALICE, BOB), key=lambda s: s.address)
    low = await net.node(low_signer, handshake_timeout=0.5)
    high = await net.node(high_signer)
    low.handler = answer_updates
    high.handler = answer_updates
    await low.manager.ping(high.address, 5.0)  # low dials: the preferred connection
    await until(lambda: high.manager.is_connected(low.address), "connected")
    stale = low.manager.current_connection(high.address)
    # The high side loses that connection without the low side noticing: it stops reading it
    # and forgets it, then dials again (a non-preferred connection).
    h_conn = high.manager.current_connection(low.address)
    assert h_conn is not None
    h_conn.state = HandshakeState.CLOSED
    high.manager._drop(high.manager._peers[low.address], h_conn, "test: went silent")
    await high.manager.ping(low.address, 5.0)  # answered on the new connection
    # The low side pings the connection it used, gets no Pong, and switches.
    await until(lambda: low.manager.current_connection(high.address) is not stale, "switched")
    await until(lambda: low.manager.connection_count(high.address) == 1, "stale one dropped")
    assert low.disconnected == [high.address]
    assert low.connected == [high.address, high.address]
    reply = await low.manager.request(high.address, update(5), 5.0)
    assert reply == UpdateAccept(CHANNEL, 5, SIG)


@pytest_twisted.ensureDeferred
async def test_a_contact_that_keeps_sending_refused_messages_is_cut_off(net: Net) -> None:
    """The owner refuses every message alice sends (as a client refuses updates about a channel
    it does not have); past the limit bob closes her connections and refuses new ones for the
    window, and sends her nothing; then she is welcome again."""
    alice = await net.node(ALICE)
    bob = await net.node(BOB, limits=PeerLimits(refusals=5, refusal_window=1.0))
    bob.handler = lambda node, peer, msg: node.manager.refused(peer)
    await alice.manager.ping(BOB.address, 3.0)
    for _ in range(5):
        await alice.manager.send(BOB.address, _refusable())
    await until(lambda: not bob.manager.is_connected(ALICE.address), "bob cuts alice off")
    assert bob.manager.admission.cut_off_until(ALICE.address) is not None
    with pytest.raises(PeerUnreachable):
        await bob.manager.send(ALICE.address, _refusable())
    with pytest.raises(PeerRequestTimedOut):  # her new connection is closed at its handshake
        await alice.manager.ping(BOB.address, 0.5)
    await sleep(1.1)
    await alice.manager.ping(BOB.address, 3.0)  # the window is over
    assert bob.manager.is_connected(ALICE.address)


@pytest_twisted.ensureDeferred
async def test_strangers_cut_off_leave_nothing_behind(net: Net) -> None:
    """A stranger cut off for refused messages is forgotten once its connection is gone (an
    audit: 41,000 throw-away keys, each cut off, left as many records for good, and every later
    stranger's admission walked them all)."""
    bob = await net.node(BOB, limits=PeerLimits(refusals=3, refusal_window=60.0,
                                                 logged_refusals=0))
    bob.handler = lambda node, peer, msg: node.manager.refused(peer)
    bob_endpoint = net.resolve(BOB.address)
    for _ in range(5):
        stranger = PeerManager(reactor, Signer(os.urandom(32)),
                               lambda a: bob_endpoint if a == BOB.address else None,
                               dial_timeout=2.0, handshake_timeout=2.0, keepalive_interval=None)
        try:
            await stranger.ping(BOB.address, 3.0)
            for _ in range(3):
                stranger.post(BOB.address, _refusable())
            await until(lambda s=stranger: not s.is_connected(BOB.address), "the cut-off")
        finally:
            await stranger.stop()
    await until(lambda: not bob.manager._peers, "bob keeps no record of the strangers")
    assert len(bob.manager.admission._cut_off) == 5  # until their window ends


@pytest_twisted.ensureDeferred
async def test_a_contact_that_keeps_breaking_the_rules_is_cut_off(net: Net) -> None:
    """Each malformed frame drops the connection; an authenticated peer's drops count as
    refused messages, so a key that reconnects and repeats is cut off (an audit: a contact's
    expensive malformed frames, 440 a second, were never counted)."""
    alice = await net.node(ALICE)
    bob = await net.node(BOB, limits=PeerLimits(refusals=3, refusal_window=60.0))
    for _ in range(3):
        await alice.manager.ping(BOB.address, 3.0)
        conn = alice.manager._peers[BOB.address].current
        assert conn is not None and conn.transport is not None
        conn.transport.write(b"\x00\x00\x00\x05hello")
        await conn.when_closed()
    await until(lambda: bob.manager.admission.cut_off_until(ALICE.address) is not None,
                "bob cuts alice off")


def _refusable() -> Message:
    """A message an owner may refuse: an UpdateReject about a channel nobody has."""
    from perund.channel.types import ChannelID
    from perund.wire.messages import UpdateReject

    return UpdateReject(ChannelID(os.urandom(32)), 1, "nothing")


@pytest_twisted.ensureDeferred
async def test_one_owner_at_a_time_and_none_after_detach(net: Net) -> None:
    alice, bob = await net.node(ALICE), await net.node(BOB)
    with pytest.raises(FailedPrecondition):
        bob.manager.attach(alice)  # bob's manager serves bob
    bob.manager.attach(bob)  # the same owner again: nothing changes
    bob.manager.detach(bob)
    with capturedLogs() as events:
        await alice.manager.send(BOB.address, Reject(b"\x01" * 32, "nobody hears this"))
        await until(lambda: any("no handler" in formatEvent(e) for e in events),
                    "Bob's manager ignores it")
    assert bob.received == []
    bob.manager.attach(bob)
    await alice.manager.send(BOB.address, Reject(b"\x02" * 32, "heard"))
    await until(lambda: bob.received != [], "Bob hears it")


@contextlib.asynccontextmanager
async def stalled_dial(net: Net) -> AsyncIterator[tuple[Node, Node, Deferred[None]]]:
    """The lower of two nodes dials the higher at an address that accepts the connection and
    never answers (its dial stays in flight until it gives up after 0.6 s); yields the low
    node, the high one, and the dial's send (failing with PeerUnreachable, trapped)."""
    low_signer, high_signer = sorted((ALICE, BOB), key=lambda s: s.address)
    low = await net.node(low_signer, dial_timeout=0.6, handshake_timeout=0.3)
    high = await net.node(high_signer)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        net.overrides[high.address] = f"tcp:host=127.0.0.1:port={silent.getsockname()[1]}"
        net.errors_expected = True  # the low side's dial fails
        dialling = low.manager.send(high.address, update(1))
        dialling.addErrback(lambda failure: failure.trap(PeerUnreachable))
        await sleep(0.05)
        yield low, high, dialling


@pytest_twisted.ensureDeferred
async def test_the_owner_hears_of_a_link_before_any_message_that_came_on_it(net: Net) -> None:
    """The lower side waits for its own dial before it uses the peer's (`_choose`): what the
    peer sends meanwhile reaches the owner only after `peer_connected`, where the client syncs
    (a Sync handled before that would count as one of the lost link's)."""
    connected_when_received: list[int] = []
    async with stalled_dial(net) as (low, high, dialling):
        low.handler = lambda node, peer, msg: connected_when_received.append(len(node.connected))
        await high.manager.send(low.address, update(2))
        await until(lambda: low.received, "the high side's message arrives", limit=5)
        await dialling
    assert [msg for _, msg in low.received] == [update(2)]
    assert low.connected == [high.address] and connected_when_received == [1]


@pytest_twisted.ensureDeferred
async def test_a_connection_waiting_to_be_chosen_reads_no_further(net: Net) -> None:
    """While the lower side's own dial is under way, it holds the first message of the peer's
    connection and reads no more of it: a peer that stalls that dial and floods cannot fill
    the node's memory; what it sent waits in the socket and arrives, in order, once a link
    is chosen."""
    async with stalled_dial(net) as (low, high, dialling):
        for version in range(2, 202):
            high.manager.send(low.address, update(version)).addErrback(lambda _: None)
        record = low.manager._peers[high.address]
        await until(lambda: bool(record.held), "the first message is held")
        await sleep(0.1)  # the rest has long reached low's socket: none of it is read
        assert len(record.held) == 1 and low.received == []
        await dialling
    await until(lambda: len(low.received) == 200, "everything arrives once a link is chosen")
    assert [msg for _, msg in low.received] == [update(v) for v in range(2, 202)]
    assert not record.held


@pytest_twisted.ensureDeferred
async def test_what_a_dropped_connection_brought_before_it_was_chosen_goes_with_it(
        net: Net) -> None:
    """A connection dropped before it was chosen takes its held message along: handled after
    the next link's `peer_connected`, it would pass for one of that link's. (A held connection
    reads nothing, a close by the peer included: it is seen once the connection is chosen,
    after what came before it, as on any link.)"""
    async with stalled_dial(net) as (low, high, dialling):
        high.manager.send(low.address, update(2)).addErrback(lambda _: None)
        record = low.manager._peers[high.address]
        await until(lambda: bool(record.held), "the message is held")
        await low.manager.disconnect(high.address)
        assert not record.held and not record.conns
        await dialling
    assert low.received == [] and low.connected == []
