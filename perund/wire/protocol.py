"""PeerProtocol: framing, decoding and the authenticated handshake of one peer connection.

Frames are a 4-byte big-endian length followed by one codec payload (`perund.wire.codec`). The
handshake (docs/specification.md §6) is a small state machine:

    AWAIT_HELLO --Hello--> AWAIT_AUTH --Auth--> READY
         \\______________________\\______________> CLOSED (any violation, deadline, loss)

On connect both sides send Hello (protocol version, claimed address, fresh 32-byte nonce). On the
peer's Hello each side checks the version (and, when it dialled, that the peer is who it meant to
reach) and sends Auth: its signature over `auth_digest`, which binds both nonces and both
addresses ordered by role. The peer's Auth must recover to the address its Hello claimed; only then
is the connection READY and every later message attributed to that address. Anything else before
READY (another message type, a second Hello, a bad signature, garbage, an oversized frame, or no
authentication by the deadline) is logged and the connection dropped.

After READY the protocol answers Ping itself and hands every other message to its owner. It never
decides anything about channels.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable
from typing import Any, Final, Protocol, cast

from twisted.internet.abstract import FileDescriptor
from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from perund.channel.encoding import Signer, recover_digest
from perund.channel.types import Address
from perund.errors import DecodeError, EncodeError, FailedPrecondition
from perund.ratelimit import LineBudget, WorkAllowance
from perund.wire.codec import decode, encode
from perund.wire.limits import (
    HANDSHAKE_FRAME_SIZE,
    HELLO_TIMEOUT,
    MAX_BACKLOG,
    STRANGER_PING_BURST,
    STRANGER_PING_RATE,
    BacklogPool,
)
from perund.wire.messages import (
    PROTOCOL_VERSION,
    Auth,
    Hello,
    Message,
    Ping,
    Pong,
    auth_digest,
)

DEFAULT_MAX_FRAME_SIZE: Final = 64 * 1024
"""Largest frame payload accepted or sent, in bytes (a Propose with 16 assets is ~1.3 KiB)."""

DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
"""Seconds a new connection has to complete the handshake."""

_LENGTH = struct.Struct(">I")

log = Logger(namespace="perund.wire")


class Transport(Protocol):
    """The part of ITCPTransport a PeerProtocol uses (zope interfaces do not type-check here)."""

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def getPeer(self) -> object: ...


def call_later(clock: IReactorTime, delay: float, f: Callable[[], object]) -> DelayedCall:
    """`clock.callLater(delay, f)`, typed."""
    return cast(DelayedCall, cast(Any, clock).callLater(delay, f))


FRAMES_PER_TURN: Final = 16
"""Frames handled per reactor turn before the rest wait for the next one (see `_parse`).
Measured over 100 busy channels (docs/performance.md): 16 beats 8 (fewer turns, polls and
socket writes per payment) and 24 or 32 (longer bursts leave each side idle more often)."""

READ_AHEAD: Final = 256 * 1024
"""Bytes of frames not yet handled past which the connection stops reading from its socket
until they are (`_parse`); below it, reading goes on, which saves the two epoll calls of a
pause and a resume on every burst a busy peer sends."""


class Role(enum.Enum):
    """Which end of the TCP connection we are; it orders the fields of the Auth digest."""

    DIALER = "dialer"
    LISTENER = "listener"


class HandshakeState(enum.Enum):
    """The connection's lifecycle; `PeerProtocol._advance` holds every transition."""

    AWAIT_HELLO = "await-hello"
    AWAIT_AUTH = "await-auth"
    READY = "ready"
    CLOSED = "closed"


class PeerProtocolOwner(Protocol):
    """What a PeerProtocol reports to (the PeerManager, or a test)."""

    def peer_authenticated(self, conn: PeerProtocol) -> None:
        """`conn` completed the handshake; `conn.peer_address` is now set."""

    def peer_message(self, conn: PeerProtocol, msg: Message) -> None:
        """An authenticated message from `conn.peer_address` (never Hello, Auth or Ping)."""

    def peer_connection_lost(self, conn: PeerProtocol, reason: Failure) -> None:
        """`conn` is closed, whether or not it ever authenticated."""

    # An owner may also have `violation_lines`, a `LineBudget` for the lines that say why a
    # connection was dropped (without one, every such line is logged), and `peer_violated`,
    # told the address of an authenticated peer whose connection broke the rules.


class _OurWrites:
    """Registered with the transport as the (push) producer of what we write: the transport
    pauses it while more than its buffer size waits to be sent, that is while the peer does
    not read (or reads slower than we write). `backlog` counts what we wrote since, and so
    does `pool` (shared by the session's connections), until the transport resumes us or the
    connection is gone."""

    def __init__(self, pool: BacklogPool | None) -> None:
        self.piling_up = False
        self.backlog = 0
        self.pool = pool

    def add(self, size: int) -> None:
        """`size` more bytes wait beyond the transport's buffer."""
        self.backlog += size
        if self.pool is not None:
            self.pool.held += size

    def settle(self) -> None:
        """What waited is sent, or gone with the connection."""
        if self.pool is not None:
            self.pool.held -= self.backlog
        self.backlog = 0

    def pauseProducing(self) -> None:
        self.piling_up = True

    def resumeProducing(self) -> None:
        self.piling_up = False
        self.settle()

    def stopProducing(self) -> None:
        self.piling_up = True


class PeerProtocol(TwistedProtocol):
    """One peer connection: length-prefixed frames, the handshake, then messages to the owner."""

    def __init__(
        self,
        owner: PeerProtocolOwner,
        signer: Signer,
        clock: IReactorTime,
        role: Role,
        expected_peer: Address | None = None,
        *,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        random_bytes: Callable[[int], bytes] = os.urandom,
        backlog_pool: BacklogPool | None = None,
    ) -> None:
        self._owner = owner
        self._signer = signer
        self._clock = clock
        self.role = role
        self.expected_peer = expected_peer
        self._handshake_timeout = handshake_timeout
        self._max_frame_size = max_frame_size
        self._reading_limit = min(HANDSHAKE_FRAME_SIZE, max_frame_size)
        """The largest frame read now: small until the peer authenticated (`_on_auth`)."""
        self._max_backlog = MAX_BACKLOG
        self._pings: WorkAllowance | None = None
        """The pings a stranger may send (each costs an answer); None: not counted."""
        self._random_bytes = random_bytes
        self.state = HandshakeState.AWAIT_HELLO
        self.peer_address: Address | None = None
        """The authenticated peer; None until READY."""
        self._nonce = b""
        self._peer_hello: Hello | None = None
        self._deadline: DelayedCall | None = None
        self._transport: Transport | None = None
        self._buffer = bytearray()
        self._backlogged = False
        self._reading_paused = False
        self._held_back = False
        """The owner cannot take this connection's messages yet (`hold_back`)."""
        self._writes = _OurWrites(backlog_pool)
        self._closed_waiters: list[Deferred[None]] = []
        self._sent_at_once = False
        """Whether a message went out at once since the peer last sent us data (`_send_now`)."""

    # -- public ---------------------------------------------------------------------------

    @property
    def dialled_by(self) -> Address:
        """The address of the side that opened this connection (READY connections only)."""
        if self.peer_address is None:
            raise FailedPrecondition("the connection is not authenticated")
        return self._signer.address if self.role is Role.DIALER else self.peer_address

    @property
    def closed(self) -> bool:
        """Whether the connection was closed, dropped, or refused (no more frames are read)."""
        return self.state is HandshakeState.CLOSED

    def hold_back(self) -> None:
        """Read no further frame until `release`: what the peer sends meanwhile waits in the
        socket's buffers (TCP flow control bounds it), not in this process's memory."""
        if not self._held_back:
            self._held_back = True
            self._pause_reading()

    def release(self) -> None:
        """Read again after `hold_back`, starting with the frames already received (on the
        next reactor turn, after whatever the caller does now)."""
        if not self._held_back:
            return
        self._held_back = False
        if self.closed:
            return
        self._resume_reading()
        if not self._backlogged:
            self._backlogged = True
            call_later(self._clock, 0, self._drain)

    def restrict(self, frame_size: int, backlog: int, ping_rate: float = STRANGER_PING_RATE,
                 ping_burst: int = STRANGER_PING_BURST) -> None:
        """From now on read frames of at most `frame_size` bytes, drop the connection once
        more than `backlog` bytes wait for a peer that does not read, or once it pings faster
        than `ping_rate` a second after a burst of `ping_burst` (a stranger's connection)."""
        self._reading_limit = min(self._reading_limit, frame_size)
        self._max_backlog = min(self._max_backlog, backlog)
        if self._pings is None or ping_rate < self._pings.rate:
            self._pings = WorkAllowance(self._clock, ping_rate, ping_burst)

    def send(self, msg: Message) -> None:
        """Write one message to an authenticated connection (buffered by the transport)."""
        if self.state is not HandshakeState.READY:
            raise FailedPrecondition("the connection is not authenticated or already closed")
        self._write(msg)
        if not self._sent_at_once:
            self._send_now()

    def close(self) -> None:
        """Close gracefully: what was written is flushed first."""
        self._closing()
        if self._transport is not None:
            self._transport.loseConnection()

    def abort(self) -> None:
        """Drop the connection at once, discarding unsent data."""
        self._closing()
        self._writes.settle()  # discarded now: the session's other connections may write it
        if self._transport is not None:
            self._transport.abortConnection()

    def when_closed(self) -> Deferred[None]:
        """Fires once `connectionLost` has run (at once if it already has)."""
        if self._transport is not None and not self.connected:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed_waiters.append(d)
        return d

    def describe(self) -> str:
        """Who is on the other end, for log lines: the address once known, else the socket."""
        if self.peer_address is not None:
            return "0x" + self.peer_address.hex()
        if self._transport is None:
            return "?"
        other = self._transport.getPeer()
        host, port = getattr(other, "host", None), getattr(other, "port", None)
        if host is None or port is None:
            return str(other)  # a unix socket's, say
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # -- twisted.internet.protocol.Protocol ------------------------------------------------

    def connectionMade(self) -> None:
        self._transport = cast(Transport, self.transport)
        # Small request/response frames: Nagle's algorithm plus delayed ACKs would add ~40 ms.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        register = getattr(self.transport, "registerProducer", None)
        if register is not None:
            register(self._writes, True)
        self._connected_at: float = cast(Any, self._clock).seconds()
        self._deadline = call_later(self._clock, min(HELLO_TIMEOUT, self._handshake_timeout),
                                    self._handshake_expired)
        self._nonce = self._random_bytes(32)
        self._write(Hello(PROTOCOL_VERSION, self._signer.address, self._nonce))

    def dataReceived(self, data: bytes) -> None:
        if self.state is HandshakeState.CLOSED:
            return
        self._sent_at_once = False
        if self._backlogged or self._held_back:
            # A drain is scheduled, or `release` will schedule one: it parses this too.
            self._buffer += data
            if len(self._buffer) > READ_AHEAD:
                self._pause_reading()
            return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """Handle the complete frames in the buffer plus `data`, at most FRAMES_PER_TURN of
        them; if more remain, finish them on the next reactor turn, and pause reading
        meanwhile if they are more than READ_AHEAD bytes.

        Handling a long burst of frames in one go would hold back every answer written
        meanwhile until the whole burst is done (the reactor writes all but the first answer
        only between turns: `_send_now`), so
        both peers would take turns idling; bounded turns keep the two pipelined.
        """
        buffer = self._buffer
        view: bytes | bytearray
        if buffer:
            buffer += data
            view = buffer
        else:
            # Common case: the chunk starts at a frame boundary; parse it without copying it.
            view = data
        size = len(view)
        pos = 0
        budget = FRAMES_PER_TURN
        while size - pos >= 4:
            (length,) = _LENGTH.unpack_from(view, pos)
            if length > self._reading_limit:  # read each time: the handshake raises it
                self._violation(f"oversized frame: {length} bytes (max {self._reading_limit})")
                return
            end = pos + 4 + length
            if end > size:
                break
            if budget == 0:
                self._backlogged = True
                if size - pos > READ_AHEAD:
                    self._pause_reading()
                call_later(self._clock, 0, self._drain)
                break
            budget -= 1
            payload = view[pos + 4 : end]
            pos = end
            self._frame(payload)
            if self.closed:
                return
            if self._held_back:
                break  # the rest waits in the buffer for `release`
        if view is buffer:
            # Deleting from the front of a bytearray is O(1) in CPython (it moves a start index).
            del buffer[:pos]
        elif pos < size:
            buffer += data[pos:]

    def _drain(self) -> None:
        self._backlogged = False
        if self.closed or self._held_back:
            return
        self._parse(b"")
        if not (self._backlogged or self._held_back or self.closed):
            # Every complete frame is handled: what is left (a frame's start) needs more bytes.
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            self._transport_pause()

    def _resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self._transport_resume()

    def _transport_pause(self) -> None:
        pause = getattr(self.transport, "pauseProducing", None)
        if pause is not None:
            pause()

    def _transport_resume(self) -> None:
        resume = getattr(self.transport, "resumeProducing", None)
        if resume is not None:
            resume()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing()
        self._buffer = bytearray()
        self._writes.stopProducing()
        self._writes.settle()  # what waited in the transport is gone with it
        self.connected = 0
        try:
            self._owner.peer_connection_lost(self, reason)
        finally:
            waiters, self._closed_waiters = self._closed_waiters, []
            for d in waiters:
                d.callback(None)

    # -- internals --------------------------------------------------------------------------

    def _write(self, msg: Message) -> None:
        payload = encode(msg)
        if len(payload) > self._max_frame_size:
            raise EncodeError(
                f"{type(msg).__name__} needs {len(payload)} bytes, over the frame limit"
            )
        assert self._transport is not None  # only called once connected
        writes = self._writes
        if writes.piling_up:
            writes.add(4 + len(payload))
            if self.state is not HandshakeState.CLOSED:
                if writes.backlog > self._max_backlog:
                    self._violation(f"it does not read what we send ({writes.backlog} bytes "
                                    f"wait beyond the transport's buffer, max "
                                    f"{self._max_backlog})")
                    return
                pool = writes.pool
                if pool is not None and pool.over:
                    self._violation(f"it does not read what we send ({writes.backlog} bytes "
                                    f"wait; the session's connections hold {pool.held}, max "
                                    f"{pool.limit})")
                    return
        self._transport.write(_LENGTH.pack(len(payload)) + payload)

    def _send_now(self) -> None:
        """Put the first message since the peer last sent us anything on the wire at once.

        A transport sends what it was given only when the reactor next polls, after every
        timed call then due has run: the commit of the state just made, a payment's own
        follow-ups. A payment waits for the peer's answer, so that time is the peer's too
        (docs/performance.md, "Where one sequential payment's time goes"). Later messages wait
        for the poll as before, until the peer speaks again, so a burst still goes out in few
        writes. (The handshake keeps the usual way: its timing matters to nobody.)
        """
        transport = self.transport
        if not isinstance(transport, FileDescriptor) or transport.disconnecting \
                or not transport.connected:
            return  # a TLS or test transport, or one closing: the reactor's own way
        self._sent_at_once = True
        # A failure leaves the bytes buffered and the transport writing: the reactor's next
        # doWrite meets it again and closes the connection as it always does.
        transport.doWrite()

    def _frame(self, payload: bytes | bytearray) -> None:
        try:
            msg = decode(payload)
        except DecodeError as exc:
            self._violation(f"undecodable frame: {exc.message}")
            return
        if self.state is HandshakeState.READY:
            if type(msg) is Ping:
                pings = self._pings
                if pings is not None:
                    if not pings.available():
                        self._violation(f"it pings faster than {pings.rate:g} a second")
                        return
                    pings.spend(1)
                # A peer that pings without reading the Pongs would have them pile up in our
                # memory; one that reads gets its answer (its keepalive needs it).
                if not self._writes.piling_up:
                    self._write(Pong(msg.nonce))
            elif type(msg) is Hello or type(msg) is Auth:
                self._violation(f"{type(msg).__name__} after authentication")
            else:
                self._owner.peer_message(self, msg)
        else:
            self._advance(msg)

    def _advance(self, msg: Message) -> None:
        """The handshake transitions: AWAIT_HELLO -> AWAIT_AUTH -> READY, else CLOSED."""
        if self.state is HandshakeState.AWAIT_HELLO and type(msg) is Hello:
            self._on_hello(msg)
        elif self.state is HandshakeState.AWAIT_AUTH and type(msg) is Auth:
            self._on_auth(msg)
        else:
            self._violation(f"{type(msg).__name__} in handshake state {self.state.value}")

    def _on_hello(self, hello: Hello) -> None:
        if hello.protocol_version != PROTOCOL_VERSION:
            self._violation(f"unsupported protocol version {hello.protocol_version}")
            return
        if hello.address == self._signer.address:
            self._violation(f"peer claims our own address 0x{hello.address.hex()}")
            return
        if self.expected_peer is not None and hello.address != self.expected_peer:
            self._violation(
                f"dialled 0x{self.expected_peer.hex()} but the peer claims 0x{hello.address.hex()}"
            )
            return
        self._peer_hello = hello
        self.state = HandshakeState.AWAIT_AUTH
        self._write(Auth(self._signer.sign_digest(self._digest(hello))))

    def _on_auth(self, auth: Auth) -> None:
        hello = self._peer_hello
        assert hello is not None  # AWAIT_AUTH is only entered with the peer's Hello stored
        try:
            signer = recover_digest(self._digest(hello), auth.signature)
        except ValueError as exc:
            self._violation(f"malformed Auth signature: {exc}")
            return
        if signer != hello.address:
            self._violation(
                f"Auth signed by 0x{signer.hex()}, Hello claimed 0x{hello.address.hex()}"
            )
            return
        self.state = HandshakeState.READY
        self._reading_limit = self._max_frame_size
        self.peer_address = hello.address
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        log.debug("authenticated peer {peer} ({role})", peer=self.describe(), role=self.role.value)
        self._owner.peer_authenticated(self)

    def _digest(self, peer_hello: Hello) -> bytes:
        ours, theirs = self._signer.address, peer_hello.address
        if self.role is Role.DIALER:
            return auth_digest(self._nonce, peer_hello.nonce, ours, theirs)
        return auth_digest(peer_hello.nonce, self._nonce, theirs, ours)

    def _handshake_expired(self) -> None:
        self._deadline = None
        if self.state is HandshakeState.AWAIT_HELLO:
            # This deadline is the Hello's alone, shorter than the handshake's: the line says
            # so, or it would name a timeout that had not passed.
            seconds = min(HELLO_TIMEOUT, self._handshake_timeout)
            self._violation(
                f"no Hello within {seconds:g} s", seconds=seconds,
                line="peer connection {peer} sent no Hello (the handshake's first message) "
                     "within {seconds:g} s of connecting, so it was closed")
        elif self.state is HandshakeState.AWAIT_AUTH:
            now: float = cast(Any, self._clock).seconds()
            left = self._connected_at + self._handshake_timeout - now
            if left > 0:  # the Hello came in time: the rest of the handshake timeout
                self._deadline = call_later(self._clock, left, self._auth_expired)
            else:
                self._auth_expired()

    def _auth_expired(self) -> None:
        self._deadline = None
        if self.state is HandshakeState.AWAIT_AUTH:
            self._violation(f"no authentication within {self._handshake_timeout} s")

    def _closing(self) -> None:
        self.state = HandshakeState.CLOSED
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _violation(self, reason: str, line: str = "dropping peer connection {peer}: {reason}",
                   **fields: object) -> None:
        """Log a refused frame or handshake step (a few lines per interval: anyone can open
        connections and break the rules on each) and drop the connection. `line` is the log
        line's template, for a case `reason` alone does not say well; `fields` its fields."""
        budget: LineBudget | None = getattr(self._owner, "violation_lines", None)
        if budget is None or budget.take():
            log.warn(line, peer=self.describe(), reason=reason, **fields)
        authenticated = self.peer_address
        self.abort()
        # An authenticated peer's broken rule counts as a refused message: else a key could
        # reconnect and send an expensive malformed frame again and again (an audit).
        violated = getattr(self._owner, "peer_violated", None)
        if authenticated is not None and violated is not None:
            violated(authenticated)
