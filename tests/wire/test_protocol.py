"""PeerProtocol in memory: the handshake, framing, and every way a hostile peer is refused."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from twisted.internet.abstract import FileDescriptor
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.test import iosim

from perund.channel.encoding import Signer
from perund.channel.memo import PaymentPart
from perund.channel.types import ETH, Address, ChannelID, Signature, State
from perund.wire.codec import decode, encode
from perund.wire.limits import (
    HANDSHAKE_FRAME_SIZE,
    HELLO_TIMEOUT,
    STRANGER_PING_BURST,
    BacklogPool,
)
from perund.wire.messages import (
    PROTOCOL_VERSION,
    Auth,
    Hello,
    Message,
    Ping,
    Pong,
    Sync,
    Update,
    UpdateAccept,
    auth_digest,
)
from perund.wire.protocol import FRAMES_PER_TURN, READ_AHEAD, HandshakeState, PeerProtocol, Role

ALICE = Signer(b"\x11" * 32)
BOB = Signer(b"\x22" * 32)
MALLORY = Signer(b"\x33" * 32)
CHANNEL = ChannelID(b"\xcc" * 32)
STATE = State(CHANNEL, 3, (ETH,), ((10**18, 2 * 10**18),), False)
UPDATE = Update(STATE, Signature(b"\x01" * 65))
NONCE = b"\x5a" * 32


class Recorder:
    """The owner side of a PeerProtocol, recording what it is told."""

    def __init__(self) -> None:
        self.authenticated: list[Address] = []
        self.messages: list[tuple[Address, Message]] = []
        self.lost: list[Failure] = []

    def peer_authenticated(self, conn: PeerProtocol) -> None:
        assert conn.peer_address is not None
        self.authenticated.append(conn.peer_address)

    def peer_message(self, conn: PeerProtocol, msg: Message) -> None:
        assert conn.peer_address is not None
        self.messages.append((conn.peer_address, msg))

    def peer_connection_lost(self, conn: PeerProtocol, reason: Failure) -> None:
        self.lost.append(reason)


def framed(*msgs: Message) -> bytes:
    out = b""
    for msg in msgs:
        payload = encode(msg)
        out += struct.pack(">I", len(payload)) + payload
    return out


def raw_frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def frames_in(data: bytes) -> Iterator[Message]:
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        yield decode(data[pos + 4 : pos + 4 + length])
        pos += 4 + length


def dropped_reasons(events: list[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_namespace") == "perund.wire"]


# -- two real protocols over an in-memory pump ------------------------------------------------


class Pair:
    def __init__(
        self, dialer: Signer = ALICE, listener: Signer = BOB, expected: Address | None = None
    ) -> None:
        self.clock = Clock()
        self.dialer_owner = Recorder()
        self.listener_owner = Recorder()
        self.dialer = PeerProtocol(
            self.dialer_owner,
            dialer,
            self.clock,
            Role.DIALER,
            expected if expected is not None else listener.address,
        )
        self.listener = PeerProtocol(self.listener_owner, listener, self.clock, Role.LISTENER)
        self.pump = iosim.connect(
            self.listener,
            iosim.FakeTransport(self.listener, isServer=True),
            self.dialer,
            iosim.FakeTransport(self.dialer, isServer=False),
            greet=True,
            clock=self.clock,
        )


def test_handshake_authenticates_both_sides() -> None:
    pair = Pair()
    assert pair.dialer.state is HandshakeState.READY
    assert pair.listener.state is HandshakeState.READY
    assert pair.dialer.peer_address == BOB.address
    assert pair.listener.peer_address == ALICE.address
    assert pair.dialer_owner.authenticated == [BOB.address]
    assert pair.listener_owner.authenticated == [ALICE.address]
    # Both agree which side opened the connection (the simultaneous-dial tie-break needs it).
    assert pair.dialer.dialled_by == pair.listener.dialled_by == ALICE.address


def test_messages_flow_both_ways_attributed_to_the_authenticated_address() -> None:
    pair = Pair()
    pair.dialer.send(UPDATE)
    accept = UpdateAccept(CHANNEL, 3, Signature(b"\x02" * 65))
    pair.listener.send(accept)
    pair.pump.flush()
    assert pair.listener_owner.messages == [(ALICE.address, UPDATE)]
    assert pair.dialer_owner.messages == [(BOB.address, accept)]


def test_ping_is_answered_by_the_protocol_itself() -> None:
    pair = Pair()
    pair.dialer.send(Ping(b"abc"))
    pair.pump.flush()
    assert pair.listener_owner.messages == []  # the owner never sees the Ping
    assert pair.dialer_owner.messages == [(BOB.address, Pong(b"abc"))]


def test_pings_of_a_peer_that_does_not_read_get_no_pong() -> None:
    """The transport pauses the producer of our writes while they pile up unsent: Pongs for a
    peer that pings without reading would otherwise grow without bound."""
    pair = Pair()
    writes = pair.listener.transport.producer
    writes.pauseProducing()  # what the transport does past its buffer size
    pair.dialer.send(Ping(b"one"))
    pair.pump.flush()
    assert pair.dialer_owner.messages == []
    writes.resumeProducing()  # drained
    pair.dialer.send(Ping(b"two"))
    pair.pump.flush()
    assert pair.dialer_owner.messages == [(BOB.address, Pong(b"two"))]


def test_no_messages_can_be_sent_before_authentication() -> None:
    clock = Clock()
    proto = PeerProtocol(Recorder(), ALICE, clock, Role.DIALER, BOB.address)
    proto.makeConnection(StringTransport())
    with pytest.raises(Exception, match="not authenticated"):
        proto.send(UPDATE)


def test_dialling_the_wrong_peer_is_refused() -> None:
    with capturedLogs() as events:
        pair = Pair(expected=MALLORY.address)
    assert pair.dialer.state is HandshakeState.CLOSED
    assert pair.dialer_owner.authenticated == []
    assert pair.listener_owner.authenticated == []  # the dialer never sent its Auth
    assert any("dialled 0x" in r for r in dropped_reasons(events))


def test_connection_closes_are_reported_to_the_owner() -> None:
    pair = Pair()
    pair.dialer.close()
    pair.pump.flush()
    assert len(pair.dialer_owner.lost) == 1
    assert len(pair.listener_owner.lost) == 1
    assert pair.listener.closed


# -- one protocol against hand-made bytes ----------------------------------------------------


class Harness:
    """A listening PeerProtocol (Bob) fed raw bytes by a test acting as the dialer."""

    def __init__(self, max_frame_size: int = 64 * 1024,
                 backlog_pool: BacklogPool | None = None) -> None:
        self.clock = Clock()
        self.owner = Recorder()
        self.transport = StringTransport()
        self.proto = PeerProtocol(
            self.owner, BOB, self.clock, Role.LISTENER, max_frame_size=max_frame_size,
            backlog_pool=backlog_pool,
        )
        self.proto.makeConnection(self.transport)
        sent = list(frames_in(self.transport.value()))
        assert len(sent) == 1 and isinstance(sent[0], Hello)
        self.hello: Hello = sent[0]
        self.transport.clear()

    def feed(self, data: bytes) -> None:
        self.proto.dataReceived(data)
        # Long bursts are handled a few frames per reactor turn: let those turns happen.
        self.clock.advance(0)

    def auth_for(self, signer: Signer, claimed: Address, nonce: bytes = NONCE) -> Auth:
        digest = auth_digest(nonce, self.hello.nonce, claimed, BOB.address)
        return Auth(signer.sign_digest(digest))

    def authenticate(self) -> None:
        self.feed(framed(Hello(PROTOCOL_VERSION, ALICE.address, NONCE)))
        self.feed(framed(self.auth_for(ALICE, ALICE.address)))
        assert self.proto.state is HandshakeState.READY

    @property
    def dropped(self) -> bool:
        return bool(self.transport.disconnecting) and self.proto.closed


def test_harness_handshake_and_bob_signs_the_same_digest() -> None:
    h = Harness()
    h.feed(framed(Hello(PROTOCOL_VERSION, ALICE.address, NONCE)))
    (auth,) = frames_in(h.transport.value())
    assert isinstance(auth, Auth)
    from perund.channel.encoding import recover_digest

    digest = auth_digest(NONCE, h.hello.nonce, ALICE.address, BOB.address)
    assert recover_digest(digest, auth.signature) == BOB.address
    h.feed(framed(h.auth_for(ALICE, ALICE.address)))
    assert h.owner.authenticated == [ALICE.address]


def test_auth_with_a_wrong_signature_is_refused() -> None:
    h = Harness()
    h.feed(framed(Hello(PROTOCOL_VERSION, ALICE.address, NONCE)))
    # A signature by Alice, but over a different digest (another connection's nonce).
    wrong = Auth(
        ALICE.sign_digest(auth_digest(b"\x00" * 32, h.hello.nonce, ALICE.address, BOB.address))
    )
    with capturedLogs() as events:
        h.feed(framed(wrong))
    assert h.dropped
    assert h.owner.authenticated == []
    assert any("Auth signed by" in r for r in dropped_reasons(events))


def test_malformed_auth_signature_is_refused() -> None:
    h = Harness()
    h.feed(framed(Hello(PROTOCOL_VERSION, ALICE.address, NONCE)))
    with capturedLogs() as events:
        h.feed(framed(Auth(Signature(b"\x00" * 64 + b"\x1b"))))
    assert h.dropped
    assert h.owner.authenticated == []
    assert any("malformed Auth signature" in r for r in dropped_reasons(events))


def test_claimed_address_differs_from_the_signer() -> None:
    h = Harness()
    # Mallory claims to be Alice and signs the right digest with her own key.
    h.feed(framed(Hello(PROTOCOL_VERSION, ALICE.address, NONCE)))
    with capturedLogs() as events:
        h.feed(framed(h.auth_for(MALLORY, ALICE.address)))
    assert h.dropped
    assert h.owner.authenticated == []
    assert any("Auth signed by" in r for r in dropped_reasons(events))


def test_auth_with_roles_swapped_is_refused() -> None:
    h = Harness()
    h.feed(framed(Hello(PROTOCOL_VERSION, ALICE.address, NONCE)))
    swapped = auth_digest(h.hello.nonce, NONCE, BOB.address, ALICE.address)
    h.feed(framed(Auth(ALICE.sign_digest(swapped))))
    assert h.dropped
    assert h.owner.authenticated == []


def test_replayed_auth_from_another_connection_is_refused() -> None:
    first = Harness()
    first.feed(framed(Hello(PROTOCOL_VERSION, ALICE.address, NONCE)))
    recorded = first.auth_for(ALICE, ALICE.address)
    first.feed(framed(recorded))
    assert first.proto.state is HandshakeState.READY
    # An eavesdropper replays Alice's Hello and Auth on a new connection: Bob's nonce differs.
    second = Harness()
    second.feed(framed(Hello(PROTOCOL_VERSION, ALICE.address, NONCE), recorded))
    assert second.dropped
    assert second.owner.authenticated == []


def test_peer_claiming_our_own_address_is_refused() -> None:
    h = Harness()
    h.feed(framed(Hello(PROTOCOL_VERSION, BOB.address, NONCE)))
    assert h.dropped
    assert h.transport.value() == b""  # no Auth was sent


def test_unsupported_protocol_version_is_refused() -> None:
    h = Harness()
    with capturedLogs() as events:
        h.feed(framed(Hello(PROTOCOL_VERSION + 1, ALICE.address, NONCE)))
    assert h.dropped
    assert any("unsupported protocol version" in r for r in dropped_reasons(events))


def test_connection_that_never_authenticates_is_dropped_at_the_deadline() -> None:
    h = Harness()
    h.feed(framed(Hello(PROTOCOL_VERSION, ALICE.address, NONCE)))  # but never an Auth
    h.clock.advance(9.9)
    assert not h.dropped
    with capturedLogs() as events:
        h.clock.advance(0.2)
    assert h.dropped
    assert h.owner.authenticated == []
    assert any("no authentication within" in r for r in dropped_reasons(events))


def test_silent_connection_is_dropped_at_the_deadline() -> None:
    h = Harness()
    h.clock.advance(10.0)
    assert h.dropped


def test_deadline_is_cancelled_once_authenticated() -> None:
    h = Harness()
    h.authenticate()
    assert h.clock.getDelayedCalls() == []
    h.clock.advance(3600)
    assert not h.dropped


@pytest.mark.parametrize(
    "first",
    [
        UPDATE,
        Auth(Signature(b"\x01" * 65)),
        Ping(b"x"),
        Sync(STATE, (Signature(b"\x01" * 65),) * 2),
    ],
    ids=["Update", "Auth", "Ping", "Sync"],
)
def test_anything_but_hello_first_is_refused(first: Message) -> None:
    h = Harness()
    h.feed(framed(first))
    assert h.dropped
    assert h.owner.messages == []


def test_message_between_hello_and_auth_is_refused() -> None:
    h = Harness()
    h.feed(framed(Hello(PROTOCOL_VERSION, ALICE.address, NONCE), UPDATE))
    assert h.dropped
    assert h.owner.messages == []


def test_second_hello_is_refused() -> None:
    h = Harness()
    h.feed(framed(Hello(PROTOCOL_VERSION, ALICE.address, NONCE)))
    h.feed(framed(Hello(PROTOCOL_VERSION, ALICE.address, NONCE)))
    assert h.dropped


def test_hello_after_authentication_is_refused() -> None:
    h = Harness()
    h.authenticate()
    with capturedLogs() as events:
        h.feed(framed(Hello(PROTOCOL_VERSION, MALLORY.address, NONCE)))
    assert h.dropped
    assert h.proto.peer_address == ALICE.address  # never re-attributed
    assert any("Hello after authentication" in r for r in dropped_reasons(events))


def test_garbage_frame_is_refused_and_logged() -> None:
    h = Harness()
    h.authenticate()
    with capturedLogs() as events:
        h.feed(raw_frame(b"\x01\x06garbage"))
    assert h.dropped
    assert h.owner.messages == []
    assert any("undecodable frame" in r for r in dropped_reasons(events))


def test_garbage_before_the_handshake_is_refused() -> None:
    h = Harness()
    h.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert h.dropped


def test_oversized_frame_is_refused_from_its_length_alone() -> None:
    h = Harness(max_frame_size=1024)
    h.authenticate()
    with capturedLogs() as events:
        h.feed(struct.pack(">I", 1025) + b"\x00" * 10)  # the body never needs to arrive
    assert h.dropped
    assert any("oversized frame: 1025 bytes" in r for r in dropped_reasons(events))


def test_frame_at_the_size_limit_is_accepted() -> None:
    payload = encode(UPDATE)
    h = Harness(max_frame_size=len(payload))
    h.authenticate()
    h.feed(raw_frame(payload))
    assert h.owner.messages == [(ALICE.address, UPDATE)]


def test_frames_before_authentication_are_small_and_the_limit_rises_with_auth() -> None:
    """Whoever connects can send frames: before the peer authenticated one is at most
    HANDSHAKE_FRAME_SIZE; a large one right behind the Auth, in the same chunk, is read at
    the full limit."""
    h = Harness()
    with capturedLogs() as events:
        h.feed(struct.pack(">I", HANDSHAKE_FRAME_SIZE + 1))
    assert h.dropped
    assert any(f"oversized frame: {HANDSHAKE_FRAME_SIZE + 1} bytes (max {HANDSHAKE_FRAME_SIZE})"
               in r for r in dropped_reasons(events))
    h = Harness()
    h.feed(framed(Hello(PROTOCOL_VERSION, ALICE.address, NONCE)))
    big = Update(STATE, Signature(b"\x01" * 65), (PaymentPart((1,), False, "r" * 128),) * 10)
    assert len(encode(big)) > HANDSHAKE_FRAME_SIZE
    h.feed(framed(h.auth_for(ALICE, ALICE.address), big))
    assert h.owner.messages == [(ALICE.address, big)]


def test_a_strangers_frames_are_limited_further() -> None:
    big = Update(STATE, Signature(b"\x01" * 65), (PaymentPart((1,), False, "r" * 128),) * 10)
    h = Harness()
    h.authenticate()
    h.proto.restrict(len(encode(big)) - 1, 1 << 20)
    h.feed(framed(UPDATE))
    assert h.owner.messages == [(ALICE.address, UPDATE)]
    h.feed(framed(big))
    assert h.dropped and h.owner.messages == [(ALICE.address, UPDATE)]


def test_a_peer_that_does_not_read_is_dropped_past_its_backlog() -> None:
    """What we write while the transport holds more than its buffer is counted; past the
    backlog the connection is dropped (an audit: a stranger streaming fee queries without
    reading made a node buffer 500 MB of answers)."""
    h = Harness()
    h.authenticate()
    h.proto.restrict(64 * 1024, 1000)
    h.proto.send(UPDATE)
    h.proto._writes.pauseProducing()  # the transport's buffer is full
    sent = 0
    with capturedLogs() as events:
        while not h.proto.closed:
            h.proto.send(UPDATE)
            sent += 1
    assert sent == 1000 // (4 + len(encode(UPDATE))) + 1
    assert h.dropped
    assert any("it does not read what we send" in r for r in dropped_reasons(events))
    h = Harness()
    h.authenticate()
    h.proto.restrict(64 * 1024, 1000)
    h.proto._writes.pauseProducing()
    for _ in range(5):
        h.proto.send(UPDATE)
    h.proto._writes.resumeProducing()  # it reads again: the count starts over
    h.proto._writes.pauseProducing()
    for _ in range(5):
        h.proto.send(UPDATE)
    assert not h.proto.closed


def test_a_sessions_connections_share_one_backlog() -> None:
    """Each connection may hold up to its own backlog for a peer that does not read, but all
    of a session's together no more than their pool: a user could otherwise add many keys of
    its own as contacts, none reading, and make the node hold 64 MiB for each. The connection
    whose write goes past the pool is dropped; what a dropped or drained connection held is
    given back."""
    frame = 4 + len(encode(UPDATE))
    pool = BacklogPool(limit=10 * frame)
    peers = [Harness(backlog_pool=pool) for _ in range(3)]
    for h in peers:
        h.authenticate()
        h.proto._writes.pauseProducing()  # none of them reads
    for h in peers[:2]:
        for _ in range(5):
            h.proto.send(UPDATE)
    assert pool.held == 10 * frame and not any(h.proto.closed for h in peers)
    with capturedLogs() as events:
        peers[2].proto.send(UPDATE)  # the eleventh frame held: past the pool
    assert peers[2].dropped and not peers[0].proto.closed and not peers[1].proto.closed
    assert any("the session's connections hold" in r for r in dropped_reasons(events))
    assert pool.held == 10 * frame  # the dropped connection's frame is gone with it
    peers[0].proto._writes.resumeProducing()  # alice reads again: hers are on their way
    assert pool.held == 5 * frame
    peers[1].proto.connectionLost()
    assert pool.held == 0


def test_nothing_after_a_violation_is_processed() -> None:
    h = Harness()
    h.authenticate()
    h.feed(raw_frame(b"\x01\x06garbage") + framed(UPDATE))
    assert h.owner.messages == []
    h.feed(framed(UPDATE))
    assert h.owner.messages == []


def test_frames_split_byte_by_byte() -> None:
    h = Harness()
    data = framed(
        Hello(PROTOCOL_VERSION, ALICE.address, NONCE),
        h.auth_for(ALICE, ALICE.address),
        UPDATE,
        UPDATE,
    )
    for i in range(len(data)):
        h.feed(data[i : i + 1])
    assert h.owner.authenticated == [ALICE.address]
    assert h.owner.messages == [(ALICE.address, UPDATE), (ALICE.address, UPDATE)]


def test_frames_coalesced_and_split_at_odd_places() -> None:
    h = Harness()
    h.authenticate()
    msgs = [UpdateAccept(CHANNEL, v, Signature(bytes([v % 256]) * 65)) for v in range(1, 200)]
    data = framed(*msgs)
    # Chunks that cut through length prefixes and bodies alike.
    sizes = [1, 3, 5, 700, 2, 4096, 9, 13]
    pos = 0
    i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        h.feed(data[pos : pos + size])
        pos += size
        i += 1
    assert [m for _, m in h.owner.messages] == msgs
    assert not h.proto._buffer  # nothing left over


def test_many_frames_in_one_chunk() -> None:
    h = Harness()
    h.authenticate()
    h.feed(framed(*[UPDATE] * 1000))
    assert len(h.owner.messages) == 1000


def test_a_burst_is_handled_over_several_turns_reading_on() -> None:
    h = Harness()
    h.authenticate()
    h.proto.dataReceived(framed(*[UPDATE] * (3 * FRAMES_PER_TURN)))
    assert len(h.owner.messages) == FRAMES_PER_TURN
    assert h.transport.producerState == "producing"  # far less than READ_AHEAD waits
    h.proto.dataReceived(framed(UPDATE))  # arrives before the next turn: queued behind
    h.clock.advance(0)
    assert len(h.owner.messages) == 3 * FRAMES_PER_TURN + 1
    assert h.transport.producerState == "producing"
    assert not h.proto._buffer


def test_reading_pauses_while_more_than_read_ahead_waits() -> None:
    h = Harness()
    h.authenticate()
    burst = framed(UPDATE)
    count = READ_AHEAD // len(burst) + 2 * FRAMES_PER_TURN
    h.proto.dataReceived(burst * count)
    assert len(h.owner.messages) == FRAMES_PER_TURN
    assert h.transport.producerState == "paused"
    h.proto.dataReceived(burst)  # was on its way: queued behind the rest
    h.clock.advance(0)
    assert len(h.owner.messages) == count + 1
    assert h.transport.producerState == "producing"
    assert not h.proto._buffer


def test_a_peer_that_keeps_sending_while_frames_wait_is_paused_at_read_ahead() -> None:
    h = Harness()
    h.authenticate()
    h.proto.dataReceived(framed(*[UPDATE] * (2 * FRAMES_PER_TURN)))
    assert h.transport.producerState == "producing"
    chunk = framed(UPDATE) * 100
    while len(h.proto._buffer) <= READ_AHEAD:  # before the reactor's next turn
        h.proto.dataReceived(chunk)
    assert h.transport.producerState == "paused"
    h.clock.advance(0)
    assert not h.proto._buffer
    assert h.transport.producerState == "producing"


def test_a_partial_frame_past_read_ahead_resumes_reading() -> None:
    """A frame's start left over once the complete frames are handled needs more bytes:
    reading resumes, however much is buffered."""
    h = Harness(max_frame_size=2 * READ_AHEAD)
    h.authenticate()
    big = (READ_AHEAD + 1000).to_bytes(4, "big") + bytes(READ_AHEAD + 10)  # its first part
    h.proto.dataReceived(framed(*[UPDATE] * (FRAMES_PER_TURN + 1)) + big)
    assert h.transport.producerState == "paused"
    h.clock.advance(0)
    assert h.transport.producerState == "producing"


def test_ping_answered_after_auth_with_pong() -> None:
    h = Harness()
    h.authenticate()
    h.transport.clear()
    h.feed(framed(Ping(b"\x07")))
    assert list(frames_in(h.transport.value())) == [Pong(b"\x07")]
    assert h.owner.messages == []


class _Reactor:
    """What a FileDescriptor asks of its reactor: which descriptors want writing."""

    def __init__(self) -> None:
        self.writers: set[object] = set()

    def addWriter(self, fd: object) -> None:
        self.writers.add(fd)

    def removeWriter(self, fd: object) -> None:
        self.writers.discard(fd)

    def addReader(self, fd: object) -> None:
        pass

    def removeReader(self, fd: object) -> None:
        pass


class SocketTransport(FileDescriptor):
    """A transport of the reactor's own kind whose socket is a list of the writes made on it
    (each `writeSomeData` is one send)."""

    def __init__(self) -> None:
        self.fake_reactor = _Reactor()
        super().__init__(reactor=self.fake_reactor)
        self.connected = 1
        self.sent: list[bytes] = []

    def writeSomeData(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        return len(data)

    def getPeer(self) -> str:
        return "somewhere"


def test_the_first_message_after_the_peer_spoke_is_sent_at_once_the_rest_at_the_poll() -> None:
    """A reactor writes buffered bytes only when it next polls, after the timed calls then
    due (a store's commit, say): an answer to the peer does not wait for them."""
    clock, owner, transport = Clock(), Recorder(), SocketTransport()
    proto = PeerProtocol(owner, BOB, clock, Role.LISTENER)
    proto.makeConnection(transport)
    hello = next(frames_in(b"".join(transport._tempDataBuffer)))
    assert isinstance(hello, Hello) and transport.sent == []  # the handshake: the usual way
    proto.dataReceived(framed(Hello(PROTOCOL_VERSION, ALICE.address, NONCE)))
    digest = auth_digest(NONCE, hello.nonce, ALICE.address, BOB.address)
    proto.dataReceived(framed(Auth(ALICE.sign_digest(digest))))
    assert proto.state is HandshakeState.READY
    transport.doWrite()  # the reactor's poll
    transport.sent.clear()

    accept = UpdateAccept(CHANNEL, 3, Signature(b"\x02" * 65))
    proto.send(accept)
    assert transport.sent == [framed(accept)]
    assert transport not in transport.fake_reactor.writers  # nothing left to write
    proto.send(UPDATE)
    proto.send(UPDATE)
    assert transport.sent == [framed(accept)]  # the peer has not spoken since: the poll's
    assert transport in transport.fake_reactor.writers
    transport.doWrite()
    assert transport.sent == [framed(accept), framed(UPDATE, UPDATE)]
    proto.dataReceived(framed(UPDATE))  # the peer speaks
    assert owner.messages[-1] == (ALICE.address, UPDATE)
    proto.send(accept)
    assert transport.sent[-1] == framed(accept)
    transport.loseConnection()
    proto.dataReceived(framed(UPDATE))
    proto.send(accept)  # a closing transport flushes the reactor's way
    assert transport.sent[-1] == framed(accept) and len(transport.sent) == 3


def test_a_peer_that_pings_too_fast_is_dropped() -> None:
    """A contact's pings are not counted (a reconnecting client pings once per waiting
    channel, and a hub may have thousands with one peer: an audit's 1,200 were dropped by a
    burst limit); a stranger may send ten at once and then one a second (an audit: 64
    strangers' ping floods slowed every payment)."""
    h = Harness()
    h.authenticate()
    h.feed(framed(*[Ping(b"x")] * 1500))
    assert not h.proto.closed
    h.proto.restrict(64 * 1024, 1 << 20)  # now a stranger's: at most the stranger burst
    h.feed(framed(*[Ping(b"y")] * STRANGER_PING_BURST))
    assert not h.proto.closed
    h.clock.advance(1.0)
    h.feed(framed(Ping(b"z")))
    assert not h.proto.closed
    with capturedLogs() as events:
        h.feed(framed(Ping(b"w")))
    assert h.dropped
    assert any("it pings faster than 1 a second" in r for r in dropped_reasons(events))


def test_a_connection_without_a_hello_is_dropped_sooner() -> None:
    """A peer sends its Hello as it connects: a silent connection holds a handshake slot for
    HELLO_TIMEOUT, not the whole handshake timeout."""
    h = Harness()
    h.clock.advance(HELLO_TIMEOUT - 0.1)
    assert not h.dropped
    with capturedLogs() as events:
        h.clock.advance(0.2)
    assert h.dropped
    (event,) = [e for e in events if e.get("log_namespace") == "perund.wire"]
    assert formatEvent(event) == (
        "peer connection 192.168.1.1:54321 sent no Hello (the handshake's first message) "
        f"within {HELLO_TIMEOUT:g} s of connecting, so it was closed")  # host:port, not repr
    assert (event["reason"], event["seconds"]) == (f"no Hello within {HELLO_TIMEOUT:g} s",
                                                   HELLO_TIMEOUT)
