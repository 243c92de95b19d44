"""The API's connections: how many, and how long one may take or idle.

A client that connects and sends nothing, sends half a request, or keeps a connection idle
holds one of the node's file descriptors. So:

- a request (headers and body) must be complete within `request_timeout` of its first byte, and
  a new connection must begin its first request within that time too; otherwise it is aborted;
- a keep-alive connection idle between requests for `idle_timeout` is closed (Twisted's own
  idle timer);
- at most `max_connections` are open at once (HTTP and WebSocket together); more are closed as
  soon as they are accepted, with one warning per interval however many there are;
- one session's credentials hold at most `connections_per_session` of them: each may buffer a
  message of up to `max_body` and `socket_send_buffer` of replies, so without it one user could
  make the node hold gigabytes (found by an audit: 1,000 WebSockets each sending a 1 MiB
  message but its last byte took 1 GB). A session's newest connection closes its oldest.

A WebSocket leaves these rules at its upgrade: from then on autobahn's pings notice a dead peer,
and the socket's own send limit (perund/api/ws.py) a peer that stops reading. It still counts
against `max_connections` until it closes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import INegotiated
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from perund.api.credentials import OPERATOR_ID
from perund.ratelimit import RateLimitedWarning

log = Logger(namespace="perund.api.connections")

@dataclass(frozen=True)
class ApiLimits:
    """The API's limits (node config section `limits`, docs/security.md)."""

    max_connections: int = 1024
    connections_per_session: int = 64
    """Connections one session's credentials may hold at once (the operator's are not
    counted): each may buffer a message of `max_body` and `socket_send_buffer` of replies."""
    request_timeout: float = 30.0
    idle_timeout: float = 60.0
    max_body: int = 1024 * 1024
    """Largest HTTP body and WebSocket message."""
    calls_in_flight: int = 128
    """API calls of one session (its credentials together), or of the operator, in progress
    at once; read-only credentials take at most half."""
    subscriptions_per_socket: int = 64
    subscriptions_per_session: int = 256
    socket_send_buffer: int = 4 * 1024 * 1024
    """Bytes of replies and pushes a WebSocket may have waiting for a client that does not
    read; past it the connection is closed."""
    session_buffer: int = 16 * 1024 * 1024
    """Bytes one session's connections may hold together (`SessionBuffers`), messages
    arriving and replies not taken (the operator's not counted)."""


class SessionBuffers:
    """Bytes the node holds for each session's API clients together, against `limit`
    (limits.api_session_buffer): WebSocket messages still arriving, and every reply and push
    written for a client that has not taken it yet, HTTP or WebSocket, in Twisted's send
    buffer included (`meter_sends`). The operator's connections are not counted, as they are
    not for `limits.api_connections_per_session`.

    `on_room(party)` is called when a session that was at its limit drops below it (the
    dispatcher starts its waiting work again then)."""

    def __init__(self, clock: Any, limit: int) -> None:
        self.limit = limit
        self.held: dict[str, int] = {}
        self.dropped = 0
        self.refused = 0
        self.most = 0
        """The most any session held at once (for tests)."""
        self.on_room: Callable[[str], None] | None = None
        self._warning = RateLimitedWarning(clock, log)

    def counted(self, party: str | None) -> bool:
        """Whether `party`'s bytes count (the operator's and nobody's do not)."""
        return party is not None and party != OPERATOR_ID

    def full(self, party: str) -> bool:
        """Whether `party` holds its limit already."""
        return self.held.get(party, 0) >= self.limit

    def fits(self, party: str | None, size: int) -> bool:
        """Whether `size` more bytes of `party` stay within the limit."""
        return not self.counted(party) or self.held.get(party or "", 0) + size <= self.limit

    def hold(self, party: str | None, size: int) -> bool:
        """Count `size` bytes for `party`; whether it stays within the limit."""
        if party is None or not self.counted(party):
            return True
        total = self.held[party] = self.held.get(party, 0) + size
        self.most = max(self.most, total)
        return total <= self.limit

    def release(self, party: str | None, size: int) -> None:
        """`size` bytes of `party` are no longer held."""
        if party is None or not self.counted(party) or not size:
            return
        before = self.held.get(party, 0)
        total = before - size
        if total > 0:
            self.held[party] = total
        else:
            self.held.pop(party, None)
        if before >= self.limit > total and self.on_room is not None:
            self.on_room(party)

    def over(self, party: str | None, what: str) -> None:
        """A connection of `party` was dropped, or a reply refused (`what`), for its session's
        buffer: say so (rate-limited)."""
        self.dropped += 1
        self._warning.warn("dropped or refused {counted} of sessions over their buffer "
                           "(limits.api_session_buffer: {limit} bytes of messages arriving and "
                           "replies not taken); the latest was session {party}'s",
                           what, limit=self.limit, party=party)


def meter_sends(transport: Any, producer: Any) -> bool:
    """Register `producer` with `transport` as a pull producer: the transport then calls its
    `resumeProducing` each time it has sent everything written to it, so what was written
    since the last call is what the transport still holds. A streaming producer hears only of
    a buffer past 64 KiB, and a client that never read made the node hold every reply
    uncounted (an audit: 64 unread batches of listings took a node from 103 to 320 MB).
    False, and nothing changed, under TLS (an `ssl:` api.listen): Twisted's TLS layer drives a
    pull producer from a loop that calls it for as long as the connection is open, a busy
    reactor for every user; there replies go uncounted, as Twisted's own streaming
    registration leaves them."""
    if INegotiated.providedBy(transport):  # TLSMemoryBIOProtocol: TLS, not plain TCP
        return False
    if transport.producer is not None:
        transport.unregisterProducer()
    transport.registerProducer(producer, False)
    return True


def let_close(transport: Any) -> None:
    """Called when `transport` has sent everything (`meter_sends`): if it is closing, unregister
    the producer, which Twisted waits for before it closes a connection with one."""
    if transport is not None and getattr(transport, "disconnecting", False) \
            and getattr(transport, "producer", None) is not None:
        transport.unregisterProducer()


class ConnectionCount:
    """The API connections open now, whose they are, and who gives way when the cap is hit.

    A connection belongs to nobody until a request on it is authenticated (`claim`), then to
    that credential's session (or the operator). At the cap, a new connection is let in by
    closing one already open: the oldest that never authenticated, else the oldest of the
    party holding the most (with at least two). So silent connections cannot lock clients
    out, nor can one user's pile of WebSockets lock out the other users and the operator.
    Only when every party holds one connection is the newcomer refused.
    """

    def __init__(self, clock: Any, limit: int, per_session: int | None = None) -> None:
        self.limit = limit
        self.per_session = per_session or limit
        self.open = 0
        self.refused = 0
        self.evicted = 0
        self._warning = RateLimitedWarning(clock, log)
        self._eviction_warning = RateLimitedWarning(clock, log)
        self._session_warning = RateLimitedWarning(clock, log)
        self._anonymous: dict[Any, None] = {}  # insertion order: oldest first
        self._parties: dict[str, dict[Any, None]] = {}
        self._party_of: dict[Any, str] = {}
        self._closed_by_us: set[Any] = set()

    def admit(self, peer: object) -> bool:
        """Whether one more connection may be open (counting it if so), closing another to
        make room at the cap (see the class)."""
        if self.open >= self.limit:
            victim = self._victim()
            if victim is None:
                self.refused += 1
                self._warning.warn("refused {counted}: {open} open (limits.api_connections); "
                                   "the latest from {peer}", "API connection", open=self.open,
                                   peer=getattr(peer, "host", str(peer)))
                return False
            self._evict(victim)
        self.open += 1
        return True

    def opened(self, connection: Any) -> None:
        """`connection` (admitted) exists: it belongs to nobody yet."""
        self._anonymous[connection] = None

    def claim(self, connection: Any, party: str) -> None:
        """A request on `connection` was authenticated for `party` (a session ID, or
        "operator"); its first such request decides whose the connection is."""
        if connection in self._anonymous:
            del self._anonymous[connection]
            members = self._parties.setdefault(party, {})
            if party != OPERATOR_ID and len(members) >= self.per_session:
                self._session_warning.warn(
                    "closed {counted} of sessions over their share "
                    "(limits.api_connections_per_session: {limit}); the latest was session "
                    "{party}'s", "API connection", limit=self.per_session, party=party)
                self._close(next(iter(members)))
            members[connection] = None
            self._party_of[connection] = party

    def release(self, connection: Any) -> None:
        """A counted connection closed."""
        if connection in self._closed_by_us:
            self._closed_by_us.discard(connection)  # released when it was closed
            return
        self._forget(connection)
        self.open -= 1

    def _victim(self) -> Any:
        if self._anonymous:
            return next(iter(self._anonymous))
        largest = max(self._parties.values(), key=len, default=None)
        if largest is None or len(largest) < 2:
            return None
        return next(iter(largest))

    def _evict(self, victim: Any) -> None:
        party = self._party_of.get(victim, "nobody")
        self._eviction_warning.warn(
            "closed {counted} to let new ones in (limits.api_connections); "
            "the latest was {party}'s", "API connection", party=party if party == "nobody" else
            ("the operator" if party == OPERATOR_ID else f"session {party}"))
        self._close(victim)

    def _close(self, victim: Any) -> None:
        """Close counted connection `victim` now (it is released here, not when it ends)."""
        self._forget(victim)
        self.open -= 1
        self.evicted += 1
        self._closed_by_us.add(victim)
        abort = getattr(victim, "abort_connection", None)
        if abort is not None:
            abort()
            return
        transport = getattr(victim, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def _forget(self, connection: Any) -> None:
        self._anonymous.pop(connection, None)
        party = self._party_of.pop(connection, None)
        if party is not None:
            members = self._parties[party]
            members.pop(connection, None)
            if not members:
                del self._parties[party]


def claim_connection(request: Any, party: str) -> None:
    """Tell `request`'s connection count whose the connection is (if it is counted)."""
    channel = getattr(request, "channel", None)
    count = getattr(channel, "count", None)
    if isinstance(count, ConnectionCount):
        count.claim(channel, party)


class ApiChannel(HTTPChannel):
    """An HTTP connection of the API, with a deadline for each request and a count."""

    count: ConnectionCount
    request_timeout: float
    buffers: SessionBuffers | None = None
    """Where its replies not yet taken are counted (the Site's), if anywhere."""
    _unsent: dict[str, int] | None = None
    """Bytes of replies written per party that the client has not taken yet."""
    socket: Any = None
    """The WebSocket this connection became, if it did (it holds the transport then)."""
    _deadline: DelayedCall | None = None
    _upgraded = False
    _metered = False
    """Whether its transport tells it of every flush (`meter_sends`; not under TLS)."""

    def abort_connection(self) -> None:
        """Drop the connection now, also once it carries a WebSocket: autobahn then takes the
        transport from the HTTP channel (found by an audit: the caps closed no WebSocket)."""
        carrier = self.transport if self.transport is not None else \
            getattr(self.socket, "transport", None)
        if carrier is not None:
            carrier.abortConnection()

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]  # untyped in Twisted
        self.count.opened(self)
        # Instead of the streaming registration HTTPChannel made: the channel is told of every
        # flush (what it held for the client is released then). Twisted no longer stops
        # reading a client whose replies pile up; its session's buffer bounds them instead.
        self._metered = meter_sends(self.transport, self)
        self._arm()

    def send_reply(self, party: str, size: int) -> bool:
        """Count a reply of `size` bytes of `party` about to be written until the client has
        taken it; False (nothing counted) if that would take the session past its buffer."""
        buffers = self.buffers
        if buffers is None or not self._metered or not buffers.counted(party):
            return True
        if not buffers.fits(party, size):
            buffers.over(party, "HTTP reply")
            return False
        buffers.hold(party, size)
        unsent = self._unsent = self._unsent or {}
        unsent[party] = unsent.get(party, 0) + size
        return True

    def resumeProducing(self) -> None:
        """The transport's buffer is empty (`meter_sends`): the client took every reply."""
        self._sent()
        super().resumeProducing()  # type: ignore[no-untyped-call]
        let_close(self.transport)

    def _sent(self) -> None:
        unsent, self._unsent = self._unsent, None
        if unsent and self.buffers is not None:
            for party, size in unsent.items():
                self.buffers.release(party, size)

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not self._handlingRequest and not self._upgraded:
            self._arm()  # the first byte of a new request: it has request_timeout to finish
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def allContentReceived(self) -> None:
        self._disarm()
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def upgraded(self) -> None:
        """The connection became a WebSocket: no request deadlines any more (it still counts
        until the socket closes, which releases it)."""
        self._upgraded = True
        self._disarm()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._sent()  # what it held is freed with it
        self._disarm()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        if not self._upgraded:
            self.count.release(self)

    def _arm(self) -> None:
        self._disarm()
        schedule: Any = self.callLater  # the Site's reactor (set in buildProtocol)
        self._deadline = schedule(self.request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport is not None:
            log.debug("closed an API connection with no complete request within {timeout} s",
                      timeout=self.request_timeout)
            self.transport.abortConnection()
