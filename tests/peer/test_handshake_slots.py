"""Who gets a handshake slot of the peer port at its cap, on a fake clock with in-memory
transports: a newcomer closes someone's handshake, but never one still young enough to be an
honest peer's on its way in."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from twisted.test import iosim

from perund.channel.encoding import Signer
from perund.channel.types import Address
from perund.peer.admission import PeerLimits
from perund.peer.dialling import PeerFactory
from perund.peer.manager import SHIELDED_SHARE, PeerManager
from perund.wire.limits import HELLO_TIMEOUT
from perund.wire.messages import Message
from perund.wire.protocol import PeerProtocol, Role

ALICE = Signer(b"\x11" * 32)
BOB = Signer(b"\x22" * 32)
SHIELD = HELLO_TIMEOUT * SHIELDED_SHARE  # the default handshake timeout is longer


class Dialer:
    """The owner of an honest peer's dial (a PeerProtocol on its own)."""

    def __init__(self) -> None:
        self.authenticated: list[Address] = []

    def peer_authenticated(self, conn: PeerProtocol) -> None:
        assert conn.peer_address is not None
        self.authenticated.append(conn.peer_address)

    def peer_message(self, conn: PeerProtocol, msg: Message) -> None:
        pass

    def peer_connection_lost(self, conn: PeerProtocol, reason: Failure) -> None:
        pass


class Port:
    """Bob's peer manager and the connections made to it, each from the host it names."""

    def __init__(self, handshakes: int, per_host: int = 16) -> None:
        self.clock = Clock()
        self.manager = PeerManager(
            self.clock, BOB, lambda a: "tcp:host=127.0.0.1:port=1" if a == ALICE.address else None,
            keepalive_interval=None, limits=PeerLimits(handshakes=handshakes,
                                                       handshakes_per_host=per_host))
        self.factory = PeerFactory(self.manager, Role.LISTENER, None)

    def accept(self, host: str) -> PeerProtocol | None:
        """What the listener makes of a connection from `host`: None if refused at once."""
        return self.factory.buildProtocol(IPv4Address("TCP", host, 40000))

    def silent(self, host: str) -> PeerProtocol | None:
        """A connection from `host` that sends nothing, if admitted."""
        conn = self.accept(host)
        if conn is not None:
            conn.makeConnection(StringTransport())
        return conn


def test_at_the_cap_a_newcomer_closes_the_oldest_handshake_once_past_its_shield(
        logs: list[dict[str, Any]]) -> None:
    """One connection from each of as many hosts as there are slots (an audit: 256 hosts' one
    each locked every real peer out, since a newcomer closed only one of a host holding two):
    the oldest gives way to a newcomer once it is past its shield; before, the newcomer is
    refused."""
    port = Port(handshakes=4)
    flood = [port.silent(f"10.0.0.{i}") for i in range(4)]
    assert all(c is not None for c in flood)
    port.clock.advance(SHIELD - 0.1)
    assert port.silent("10.0.1.1") is None  # every slot's holder is still shielded
    assert not any(c.closed for c in flood if c is not None)
    port.clock.advance(0.1)
    newcomers = [port.silent(f"10.0.2.{i}") for i in range(2)]
    assert all(c is not None for c in newcomers)
    assert [c.closed for c in flood if c is not None] == [True, True, False, False]
    assert any(f"the latest from 10.0.0.0, the oldest, older than {SHIELD:g} s" in formatEvent(e)
               for e in logs)  # one line per interval: it tells of the first


def test_a_stream_of_newcomers_cannot_close_an_honest_handshake_before_it_completes() -> None:
    """An honest dial that got a slot keeps it through its shield however many newcomers
    come (each closes one of the older connections, then none is left to close), so a slow
    handshake completes."""
    port = Port(handshakes=4)
    for i in range(4):
        port.silent(f"10.0.0.{i}")
    port.clock.advance(SHIELD)
    listener = port.accept("192.0.2.7")  # Alice's dial: let in, the oldest gives way
    assert listener is not None
    alice = Dialer()
    dialer = PeerProtocol(alice, ALICE, port.clock, Role.DIALER, BOB.address)
    pump = iosim.connect(listener, iosim.FakeTransport(listener, isServer=True),
                         dialer, iosim.FakeTransport(dialer, isServer=False),
                         greet=False, clock=port.clock)
    admitted = 0
    for i in range(int(SHIELD / 0.1) - 1):  # a newcomer every 0.1 s from a fresh host
        port.clock.advance(0.1)
        admitted += port.silent(f"10.1.{i}.1") is not None
    assert admitted == 3  # the three connections older than Alice's, and only they
    assert not listener.closed
    pump.flush()  # her Hello and Auth arrive at last, just within the shield
    assert port.manager.is_connected(ALICE.address)
    assert alice.authenticated == [BOB.address]


def test_a_newcomer_its_own_hosts_cap_refuses_closes_nobody() -> None:
    """A host at its own cap gains nothing by connecting: it cannot close others' handshakes
    for newcomers that are refused anyway."""
    port = Port(handshakes=3, per_host=1)
    first = [port.silent(f"10.0.0.{i}") for i in range(3)]
    port.clock.advance(SHIELD)
    assert port.silent("10.0.0.2") is None  # that host holds its one
    assert not any(c.closed for c in first if c is not None)
    assert port.silent("10.0.0.0") is not None  # its own oldest gives way: it is let in
    assert [c.closed for c in first if c is not None] == [True, False, False]
