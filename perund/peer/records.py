"""What the peer manager keeps of each peer (its connections, the one in use, the sends and
requests waiting), and who it reports to (`PeerManagerOwner`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from perund.channel.types import Address
from perund.peer.deadlines import Deadline
from perund.peer.dial_failures import DialFailures
from perund.wire.messages import CorrelationKey, Message
from perund.wire.protocol import PeerProtocol

log = Logger(namespace="perund.peer")

Resolver = Callable[[Address], str | None]
"""Maps a peer's address to a client endpoint string, or None if the peer is unknown."""


def hex_of(address: bytes) -> str:
    """`address` as the peer manager logs and reports it: 0x and lowercase hex."""
    return "0x" + address.hex()


class PeerManagerOwner(Protocol):
    """What a PeerManager reports to (the channel client, or a test), as a PeerProtocol reports
    to its PeerProtocolOwner. Each call comes on the reactor thread; what it raises is logged."""

    def peer_connected(self, peer: Address) -> None:
        """`peer` became reachable: after authentication, on every reconnect."""

    def message_received(self, peer: Address, msg: Message) -> None:
        """A message from `peer` that is not a response to one of our requests."""

    def peer_disconnected(self, peer: Address) -> None:
        """The connection in use for `peer` is lost."""

    def peer_relinked(self, peer: Address) -> None:
        """The connection in use for `peer` changed to another while the first was still up:
        the lower side's dial replaced ours (perund/peer/table.py). Either the two dials
        crossed, or the peer lost ours without our noticing (it restarted behind it) and now
        waits for an answer on its own."""


class _NoOwner:
    """The owner of a manager nobody attached to: ignores everything."""

    def peer_connected(self, peer: Address) -> None:
        pass

    def message_received(self, peer: Address, msg: Message) -> None:
        log.info("no handler: ignored a {kind} from {peer}", kind=type(msg).__name__,
                 peer=hex_of(peer))

    def peer_disconnected(self, peer: Address) -> None:
        pass

    def peer_relinked(self, peer: Address) -> None:
        pass


NO_OWNER: Final = _NoOwner()


class PendingRequest:
    """A request waiting for its response, and the connection it was written to."""

    __slots__ = ("conn", "deadline", "deferred")

    def __init__(self, conn: PeerProtocol,
                 cancelled: Callable[[Deferred[Message]], None]) -> None:
        self.conn = conn
        self.deferred: Deferred[Message] = Deferred(cancelled)
        self.deadline: Deadline | None = None
        """When it times out (`PeerManager._issue`)."""

    def settle(self) -> None:
        """It is answered, failed, cancelled or timed out: it no longer times out."""
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None  # the deadline's call refers to this entry


@dataclass(eq=False)
class PeerRecord:
    """Everything the manager tracks about one peer address."""

    address: Address
    conns: list[PeerProtocol] = field(default_factory=list)
    """Authenticated, open connections, oldest first (normally one)."""
    current: PeerProtocol | None = None
    """The connection messages to this peer are written to."""
    waiters: list[Deferred[PeerProtocol]] = field(default_factory=list)
    """Sends waiting for a connection."""
    connector: Deferred[None] | None = None
    attempt_in_flight: bool = False
    keep: bool = False
    pending: dict[CorrelationKey, PendingRequest] = field(default_factory=dict)
    probing: bool = False
    dial_failures: DialFailures = field(default_factory=DialFailures)
    """Our dials that failed since it was last connected: what of them to log."""
    held: list[tuple[PeerProtocol, Message]] = field(default_factory=list)
    """Messages that came while no connection was chosen (`_choose`), each with the connection
    it came on (which reads no more until then: `PeerProtocol.hold_back`), for the owner once
    one is chosen and it has heard of it (`peer_connected`)."""
