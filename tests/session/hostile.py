"""Tools for the hostile-peer tests of the channel client: log capture, raw TCP peers that speak
(or mangle) the wire protocol by hand, crafted messages, and waits for reconnection."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import LogEvent, LogLevel, formatEvent
from twisted.python.failure import Failure

from perund.channel.encoding import Signer
from perund.channel.records import Channel
from perund.channel.steps import provable
from perund.channel.types import Address, ChannelID, Signature, State
from perund.peer.manager import PeerManager
from perund.wire.codec import decode, encode
from perund.wire.messages import PROTOCOL_VERSION, Auth, Hello, Message, auth_digest
from perund.wire.protocol import PeerProtocol

from .conftest import User

_LOUD = {LogLevel.warn, LogLevel.error, LogLevel.critical}


class LogCapture:
    """Every twisted.logger event published while installed on globalLogPublisher."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)

    def mark(self) -> int:
        """A position: `warnings(since=mark)` shows only what was logged afterwards."""
        return len(self.events)

    def warnings(self, since: int = 0) -> list[str]:
        """The text of every warning (or worse) logged since `since`."""
        return [formatEvent(e) for e in self.events[since:] if e.get("log_level") in _LOUD]

    def failures(self) -> list[str]:
        """Every logged failure or error: a bug somewhere, never a peer's misbehaviour."""
        return [
            formatEvent(e)
            for e in self.events
            if e.get("log_failure") is not None
            or e.get("log_level") in (LogLevel.error, LogLevel.critical)
        ]

    def warned(self, *fragments: str, since: int = 0) -> bool:
        """Whether one warning since `since` contains every fragment."""
        return any(all(f in text for f in fragments) for text in self.warnings(since))

    async def wait_for(self, *fragments: str, since: int = 0) -> None:
        """Wait until a warning containing every fragment has been logged."""
        await until(lambda: self.warned(*fragments, since=since),
                    f"a warning with {fragments!r}; got {self.warnings(since)!r}")


async def sleep(seconds: float) -> None:
    """Let the reactor run for `seconds`."""
    await deferLater(reactor, seconds, lambda: None)


async def until(condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Wait for `condition` (polling); fail the test if it does not hold within `limit` s."""
    waited = 0.0
    while not condition():
        if waited >= limit:
            raise AssertionError(f"gave up waiting for: {what}")
        await sleep(0.01)
        waited += 0.01


async def outcome(d: Deferred[Channel], what: str, limit: float = 10.0) -> Channel | Failure:
    """The result of `d` (a channel, or the failure), waiting at most `limit` s for it; a
    liveness bound only: the tests that use it make the real timeouts far longer."""
    box: list[Channel | Failure] = []
    d.addBoth(box.append)
    await until(lambda: bool(box), what, limit)
    return box[0]


def current_state(user: User, channel_id: ChannelID) -> State:
    """`user`'s latest fully signed state of the channel."""
    current = user.client.channels[channel_id].current
    assert current is not None
    return current.state


def next_state(state: State, *, version: int | None = None,
               balances: tuple[tuple[int, ...], ...] | None = None,
               assets: tuple[Address, ...] | None = None) -> State:
    """A successor of `state` (by default: version + 1, same assets and balances)."""
    return State(
        state.channel_id,
        state.version + 1 if version is None else version,
        state.assets if assets is None else assets,
        state.balances if balances is None else balances,
        state.is_final,
    )


def frame(payload: bytes) -> bytes:
    """One wire frame: 4-byte big-endian length, then the payload."""
    return struct.pack(">I", len(payload)) + payload


def current_connection(peers: PeerManager, peer: Address) -> PeerProtocol:
    """The connection `peers` writes to `peer` on (there must be one)."""
    conn = peers.current_connection(peer)
    assert conn is not None, "no connection"
    return conn


async def reconnected(a: User, b: User, old: PeerProtocol | None) -> None:
    """Wait until a and b are connected again on a connection other than `old`."""
    def both() -> bool:
        ab = a.peers.current_connection(b.client.address)
        ba = b.peers.current_connection(a.client.address)
        return ab is not None and ab is not old and ba is not None and ba is not old

    await until(both, f"{a.name} and {b.name} reconnected")


async def agreed(a: User, b: User, channel_id: ChannelID) -> State:
    """Wait until both sides hold the same fully signed state with nothing in flight; it.

    The state is the one each would register (`provable`): a payer may hold a newer one
    under a false countersignature of the peer's (docs/protocol.md, "Verification by
    interest"), which a hostile peer's client need not know of until the next update."""
    def settled() -> bool:
        ca, cb = a.client.channels[channel_id], b.client.channels[channel_id]
        return (
            ca.current is not None and cb.current is not None
            and provable(ca) == provable(cb)
            and ca.staged is None and cb.staged is None
            and not ca.needs_sync and not cb.needs_sync
        )

    await until(settled, f"{a.name} and {b.name} agree on channel 0x{channel_id.hex()[:8]}")
    return provable(a.client.channels[channel_id]).state


class RawPeer(Protocol):
    """A TCP client that speaks the wire format by hand: it sends what a test tells it to and
    keeps every well-formed message the other side sends."""

    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()
        self.buffer = b""
        self.received: list[Message] = []

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4:
            (length,) = struct.unpack(">I", self.buffer[:4])
            if len(self.buffer) < 4 + length:
                break
            payload, self.buffer = self.buffer[4 : 4 + length], self.buffer[4 + length :]
            self.received.append(decode(payload))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)

    def send(self, msg: Message) -> None:
        """Write one well-formed message."""
        assert self.transport is not None
        self.transport.write(frame(encode(msg)))

    def hello(self, claimed: Address) -> bytes:
        """Send a Hello claiming `claimed`; our nonce."""
        nonce = os.urandom(32)
        self.send(Hello(PROTOCOL_VERSION, claimed, nonce))
        return nonce

    async def their_hello(self) -> Hello:
        """The listener's Hello (its first message)."""
        await until(lambda: bool(self.received), "the listener's Hello")
        hello = self.received[0]
        assert isinstance(hello, Hello)
        return hello

    async def authenticate(self, claimed: Address, key: Signer,
                           digest: bytes | None = None) -> None:
        """Hello as `claimed`, then Auth signed by `key` over the right digest (or `digest`)."""
        ours = self.hello(claimed)
        theirs = await self.their_hello()
        if digest is None:
            digest = auth_digest(ours, theirs.nonce, claimed, theirs.address)
        self.send(Auth(key.sign_digest(digest)))


async def raw_connect(port: int) -> RawPeer:
    """A RawPeer connected to 127.0.0.1:`port`."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    peer: RawPeer = await endpoint.connect(Factory.forProtocol(RawPeer))
    return peer


def bad_signature() -> Signature:
    """65 bytes that are no valid signature of anything (v = 0)."""
    return Signature(os.urandom(64) + b"\x00")
