"""Hostile peers against real channel clients over loopback TCP (issue 3, hostile-peer tests).

Four real clients on 127.0.0.1, funding on one embedded dev chain: alice and carol each have a
channel with bob (the victim); mallory is an authenticated contact without a channel. Every
attack must be refused and logged, leave bob's channel record unchanged, and leave bob serving:
afterwards (and, where it can be shown, meanwhile) real payments between the honest parties
succeed and both sides agree on the same fully signed state.
"""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import msgpack
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from perund.chain.backend import ChainBackend
from perund.channel import events as ev
from perund.channel.encoding import Signer
from perund.channel.events import Reason
from perund.channel.phases import Phase
from perund.channel.proposal import OpenRequest
from perund.channel.records import Channel
from perund.channel.types import ETH, Address, ChannelID, Signature, State
from perund.errors import (
    PeerDisconnected,
    PeerRejected,
    PeerRequestTimedOut,
    ResourceNotFound,
)
from perund.session.notices import ChannelNotice, ProposalNotice, UpdateNotice
from perund.session.questions import MAX_PROPOSALS_PER_PEER
from perund.wire.codec import FORMAT_VERSION, TYPE_UPDATE, encode
from perund.wire.messages import (
    PROTOCOL_VERSION,
    Auth,
    Hello,
    Message,
    Ping,
    Pong,
    Reject,
    Sync,
    Update,
    UpdateAccept,
    UpdateReject,
)
from perund.wire.protocol import DEFAULT_MAX_FRAME_SIZE

from .conftest import ETHER, User, make_user, open_between
from .hostile import (
    LogCapture,
    agreed,
    bad_signature,
    current_connection,
    current_state,
    frame,
    next_state,
    outcome,
    raw_connect,
    reconnected,
    until,
)

TOKEN = Address(b"\x77" * 20)
LONG = 300.0
"""Response and request timeout where a test shows that a failure comes from the dropped
connection, not from a timer: no timer can fire within the test's life."""


@dataclass
class World:
    """The four clients, their two channels, and everything logged."""

    alice: User
    bob: User
    carol: User
    mallory: User
    ab: ChannelID
    """alice-bob (alice is participant 0)."""
    cb: ChannelID
    """carol-bob (carol is participant 0)."""
    logs: LogCapture
    endpoints: dict[Address, str]
    """Where each user listens: remove an entry and nobody can dial that user."""

    def hex(self, user: User) -> str:
        return "0x" + user.client.address.hex()


@pytest_twisted.async_yield_fixture
async def world(chain: ChainBackend) -> AsyncIterator[World]:
    endpoints: dict[Address, str] = {}
    contacts: set[Address] = set()
    names = ("alice", "bob", "carol", "mallory")
    users = [make_user(name, chain, i + 1, endpoints.get, contacts) for i, name in enumerate(names)]
    for user in users:
        port = await user.peers.listen()
        endpoints[user.client.address] = f"tcp:host=127.0.0.1:port={port}"
        contacts.add(user.client.address)
    alice, bob, carol, mallory = users
    # Connections that never authenticate are dropped at this deadline (default 10 s).
    bob.peers.handshake_timeout = 0.5
    logs = LogCapture()
    globalLogPublisher.addObserver(logs)
    try:
        ab = await open_between(alice, bob, 5 * ETHER, 3 * ETHER)
        cb = await open_between(carol, bob, 2 * ETHER, 2 * ETHER)
        yield World(alice, bob, carol, mallory, ab, cb, logs, endpoints)
        for user in users:
            await user.peers.stop()
    finally:
        globalLogPublisher.removeObserver(logs)
    # A peer's misbehaviour is a warning; a logged failure would be a bug in the client.
    assert logs.failures() == []


async def pays(payer: User, payee: User, channel_id: ChannelID, amount: int) -> State:
    """A real payment; checks the balances and that both sides agree on the new state."""
    before = current_state(payer, channel_id)
    channel = await payer.client.send(channel_id, ((ETH, amount),))
    assert channel.current is not None
    after = channel.current.state
    i = channel.index
    assert after.version > before.version  # versions skip past refused updates
    assert after.balances[0][i] == before.balances[0][i] - amount
    assert after.balances[0][1 - i] == before.balances[0][1 - i] + amount
    assert await agreed(payer, payee, channel_id) == after
    return after


async def still_serving(w: World) -> None:
    """Payments both ways on both of bob's channels succeed."""
    await pays(w.alice, w.bob, w.ab, ETHER // 10)
    await pays(w.bob, w.alice, w.ab, ETHER // 20)
    await pays(w.carol, w.bob, w.cb, 3)
    await pays(w.bob, w.carol, w.cb, 2)
    assert w.bob.client.channels[w.ab].phase is Phase.OPEN
    assert w.bob.client.channels[w.cb].phase is Phase.OPEN


def refusals(w: World, sender: User, reason: Reason, since: int) -> int:
    """How many messages from `sender` bob's client refused for `reason` since `since`."""
    return sum(
        1
        for text in w.logs.warnings(since)
        if text.startswith(f"refused a message from {w.hex(sender)}") and reason.value in text
    )


def hijack(user: User, handler: Callable[[Callable[[Address, Message], object], Address,
                                         Message], object]) -> Callable[[], None]:
    """Route `user`'s incoming messages through `handler(original, peer, msg)`; the undo."""
    inbox = user.client.inbox

    class Hijacker:
        """The owner of `user`'s peer links meanwhile: the client's inbox, messages diverted."""

        def peer_connected(self, peer: Address) -> None:
            inbox.peer_connected(peer)

        def peer_disconnected(self, peer: Address) -> None:
            inbox.peer_disconnected(peer)

        def peer_relinked(self, peer: Address) -> None:
            inbox.peer_relinked(peer)

        def message_received(self, peer: Address, msg: Message) -> None:
            handler(inbox.message_received, peer, msg)

    hijacker = Hijacker()
    user.peers.detach(inbox)
    user.peers.attach(hijacker)

    def restore() -> None:
        user.peers.detach(hijacker)
        user.peers.attach(inbox)

    return restore


# -- connections that never become a peer ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_connections_that_never_authenticate_are_dropped_while_bob_serves(
    world: World,
) -> None:
    w, bob = world, world.bob
    port = bob.peers.port
    assert port is not None
    snapshot = bob.client.channels[w.ab]
    mark = w.logs.mark()
    silent = await raw_connect(port)
    hello_only = await raw_connect(port)
    hello_only.hello(Signer(os.urandom(32)).address)
    # While the two hang around, bob's other channel keeps working.
    for _ in range(5):
        await pays(w.carol, bob, w.cb, 1)
        await pays(bob, w.carol, w.cb, 1)
    await silent.closed
    await hello_only.closed
    warned = w.logs.warnings(mark)
    assert sum("sent no Hello (the handshake's first message) within" in t  # the silent one
               for t in warned) == 1
    assert sum("no authentication within" in t for t in warned) == 1  # the Hello-only one
    assert isinstance(silent.received[0], Hello)  # bob spoke first, and nothing else
    assert len(silent.received) == 1
    assert bob.client.channels[w.ab] == snapshot
    assert set(bob.peers.connected_peers()) == {w.alice.client.address, w.carol.client.address}
    await still_serving(w)


@pytest_twisted.ensureDeferred
async def test_bad_auth_and_impostors_are_dropped(world: World) -> None:
    w, bob, alice = world, world.bob, world.alice
    port = bob.peers.port
    assert port is not None
    alice_conn = current_connection(bob.peers, alice.client.address)
    snapshot = dict(bob.client.channels)
    mark = w.logs.mark()
    stranger, other = Signer(os.urandom(32)), Signer(os.urandom(32))

    wrong_key = await raw_connect(port)  # Auth signed by another key than the Hello claims
    await wrong_key.authenticate(stranger.address, other)
    wrong_digest = await raw_connect(port)  # the right key, over the wrong bytes
    await wrong_digest.authenticate(stranger.address, stranger, digest=b"\x00" * 32)
    malformed = await raw_connect(port)
    malformed.hello(stranger.address)
    await malformed.their_hello()
    malformed.send(Auth(bad_signature()))
    impostor = await raw_connect(port)  # claims to be alice; cannot sign as alice
    await impostor.authenticate(alice.client.address, w.mallory.client.signer)
    mirror = await raw_connect(port)  # claims to be bob himself
    mirror.hello(bob.client.address)
    early = await raw_connect(port)  # skips the handshake
    early.send(Update(next_state(current_state(bob, w.ab)), bad_signature()))

    for conn in (wrong_key, wrong_digest, malformed, impostor, mirror, early):
        await conn.closed
    drops = w.logs.warnings(mark)
    assert sum(f"Hello claimed 0x{stranger.address.hex()}" in t for t in drops) == 2
    for fragment in (
        f"Auth signed by 0x{other.address.hex()}, Hello claimed 0x{stranger.address.hex()}",
        "malformed Auth signature",
        f"Hello claimed 0x{alice.client.address.hex()}",
        "peer claims our own address",
        "Update in handshake state await-hello",
    ):
        assert w.logs.warned("dropping peer connection", fragment, since=mark), fragment
    # Nobody became a peer; alice's connection was neither replaced nor disturbed.
    assert set(bob.peers.connected_peers()) == {alice.client.address, w.carol.client.address}
    assert bob.peers.current_connection(alice.client.address) is alice_conn
    assert bob.peers.connection_count(alice.client.address) == 1
    assert bob.client.channels == snapshot
    await still_serving(w)


@pytest_twisted.ensureDeferred
async def test_a_stranger_streaming_unsolicited_answers_is_cut_off(world: World) -> None:
    """Answers to nothing (a Pong, a proposal's Reject) cost a stranger only a fresh key, and
    each was an info line: they count as refusals now, so a stream of them is cut off."""
    w, bob = world, world.bob
    port = bob.peers.port
    assert port is not None
    mark = w.logs.mark()
    stranger = Signer(os.urandom(32))
    conn = await raw_connect(port)
    await conn.authenticate(stranger.address, stranger)
    limit = bob.peers.admission.limits.refusals
    for i in range(limit):
        conn.send(Pong(i.to_bytes(8, "big")) if i % 2 else Reject(os.urandom(32), "no"))
    await until(lambda: conn.closed.called, "the stranger cut off")
    assert w.logs.warned(f"peer 0x{stranger.address.hex()} sent {limit} messages that were "
                         "refused", since=mark)
    # Its coming and going, news of nobody bob knows, is below info (a log line per fresh key).
    about = [e for e in w.logs.events[mark:] if e.get("peer") == "0x" + stranger.address.hex()]
    assert "peer {peer} connected" in {e["log_format"] for e in about
                                       if e["log_level"] is LogLevel.debug}
    assert not [e for e in about if e["log_level"] is LogLevel.info
                and "unsolicited" not in e["log_format"]]  # those: the first few refusals
    await still_serving(w)


# -- messages about someone else's channel --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_messages_about_someone_elses_channel_are_refused(world: World) -> None:
    w, alice, bob, carol, mallory = world, world.alice, world.bob, world.carol, world.mallory
    # Bob asks alice for a payment; her user has not answered yet, so bob's update is in flight.
    requesting = bob.client.send(w.ab, ((ETH, -ETHER),))
    question = await alice.update_question()
    assert isinstance(question, UpdateNotice)
    snapshot = bob.client.channels[w.ab]
    assert snapshot.staged is not None and snapshot.phase is Phase.UPDATING
    current, staged = current_state(bob, w.ab), snapshot.staged.state
    assert snapshot.current is not None
    mark = w.logs.mark()
    signer = mallory.client.signer
    attacks: list[Message] = [
        # A genuine alice-signed successor, relayed by mallory: the sender is what counts.
        Update(next_state(staged), alice.client.signer.sign_state(next_state(staged))),
        Update(next_state(current), signer.sign_state(next_state(current))),
        UpdateAccept(w.ab, staged.version, signer.sign_state(staged)),
        UpdateAccept(w.ab, staged.version, bad_signature()),
        UpdateReject(w.ab, staged.version, "mallory says no"),
        Sync(next_state(current, version=current.version + 5),
             (alice.client.signer.sign_state(next_state(current, version=current.version + 5)),
              signer.sign_state(next_state(current, version=current.version + 5)))),
        Sync(current, snapshot.current.signatures),  # a replay of the real, fully signed state
    ]
    for msg in attacks:
        await mallory.peers.send(bob.client.address, msg)
    # Alice, who has no part in carol's channel with bob, speaks about it.
    carol_state = current_state(bob, w.cb)
    await alice.peers.send(bob.client.address, UpdateReject(w.cb, carol_state.version + 1, "x"))
    await alice.peers.send(bob.client.address, Update(
        next_state(carol_state), alice.client.signer.sign_state(next_state(carol_state))))
    await until(lambda: refusals(w, mallory, Reason.NOT_PEER, mark) == len(attacks)
                and refusals(w, alice, Reason.NOT_PEER, mark) == 2, "every message refused")
    # An Update about a channel bob does not know is answered with a reject.
    unknown = State(ChannelID(b"\x42" * 32), 1, (ETH,), ((1, 1),))
    answer = await mallory.peers.request(
        bob.client.address, Update(unknown, signer.sign_state(unknown)), 5.0)
    assert answer == UpdateReject(unknown.channel_id, 1, "unknown channel")
    assert w.logs.warned("about unknown channel", since=mark)

    # Meanwhile carol is served; bob's update waits for alice, untouched.
    await pays(carol, bob, w.cb, 5)
    assert bob.client.channels[w.ab] == snapshot
    assert not requesting.called
    await alice.client.respond_update(w.ab, question.update_id, True)
    channel = await requesting
    assert channel.current is not None and channel.current.state == staged
    await agreed(alice, bob, w.ab)
    await still_serving(w)


# -- the real peer breaks the rules -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_updates_from_the_real_peer_that_break_the_rules(world: World) -> None:
    w, alice, bob = world, world.alice, world.bob
    await pays(alice, bob, w.ab, ETHER)
    current = current_state(bob, w.ab)
    (a, b), = current.balances
    snapshot = bob.client.channels[w.ab]
    key, mallory_key = alice.client.signer, w.mallory.client.signer
    pay = next_state(current, balances=((a - 1, b + 1),))  # a valid successor: alice pays 1 wei

    async def refused(state: State, signature: Signature, reason: Reason) -> None:
        mark = w.logs.mark()
        answer = await alice.peers.request(bob.client.address, Update(state, signature), 5.0)
        # A version too low names the one to propose above (updating._version_reject).
        said = reason.value if reason is not Reason.VERSION \
            else f"{reason.value} (signed up to {snapshot.signed_up_to})"
        assert answer == UpdateReject(w.ab, state.version, said)
        assert refusals(w, alice, reason, mark) == 1
        assert bob.client.channels[w.ab] == snapshot

    same = next_state(pay, version=current.version)
    await refused(same, key.sign_state(same), Reason.VERSION)  # equal version
    lower = next_state(pay, version=current.version - 1)
    await refused(lower, key.sign_state(lower), Reason.VERSION)
    # (A version that skips ahead is valid: see records.Channel.signed_up_to.)
    inflated = next_state(current, balances=((a + ETHER, b),))
    await refused(inflated, key.sign_state(inflated), Reason.TOTALS)
    drained = next_state(current, balances=((a - ETHER, b),))  # burns coins
    await refused(drained, key.sign_state(drained), Reason.TOTALS)
    await refused(pay, bad_signature(), Reason.SIGNATURE)
    await refused(pay, key.sign_state(inflated), Reason.SIGNATURE)  # signature of another state
    await refused(pay, mallory_key.sign_state(pay), Reason.SIGNATURE)  # the wrong key
    await refused(pay, bob.client.signer.sign_state(pay), Reason.SIGNATURE)  # bob's own key
    token = next_state(current, assets=(TOKEN,), balances=pay.balances)
    await refused(token, key.sign_state(token), Reason.ASSETS)
    two = next_state(current, assets=(ETH, TOKEN), balances=((a - 1, b + 1), (0, 0)))
    await refused(two, key.sign_state(two), Reason.ASSETS)

    # Syncs with a forged second signature: a newer state, and another state of this version.
    # Neither may become current, nor be taken for a conflict worth a dispute.
    mark = w.logs.mark()
    robbed = next_state(current, version=current.version + 3, balances=((a + b, 0),))
    twin = next_state(current, version=current.version, balances=((a + b, 0),))
    for state in (robbed, twin):
        theirs = key.sign_state(state)
        for forged in (mallory_key.sign_state(state), theirs, bad_signature()):
            await alice.peers.send(bob.client.address, Sync(state, (theirs, forged)))
    # An UpdateReject for an update bob never sent.
    await alice.peers.send(bob.client.address, UpdateReject(w.ab, current.version + 1, "no"))
    await until(lambda: refusals(w, alice, Reason.SIGNATURE, mark) == 6
                and refusals(w, alice, Reason.NOTHING_STAGED, mark) == 1, "syncs refused")
    assert bob.client.channels[w.ab] == snapshot
    assert not any(isinstance(n, ChannelNotice) and isinstance(n.event, ev.Conflict)
                   for n in bob.notices)
    assert await agreed(alice, bob, w.ab) == current
    await still_serving(w)


@pytest_twisted.ensureDeferred
async def test_asking_and_withdrawing_counts_against_the_peer(world: World) -> None:
    """A request, then a Sync of the state before it: bob's user is asked for nothing, and
    alice paid nothing. Each withdrawal is counted as a refusal, so a peer repeating it without
    end is cut off like any other (the resource review's question flood)."""
    w, alice, bob = world, world.alice, world.bob
    await pays(alice, bob, w.ab, ETHER)
    current = bob.client.channels[w.ab].current
    assert current is not None
    (a, b), = current.state.balances
    request = next_state(current.state, balances=((a + 1, b - 1),))
    mark = w.logs.mark()
    for _ in range(3):
        asked = bob.update_question()
        await alice.peers.send(bob.client.address,
                               Update(request, alice.client.signer.sign_state(request)))
        assert isinstance(await asked, UpdateNotice)
        await alice.peers.send(bob.client.address, Sync(current.state, current.signatures))
        await until(lambda: bob.client.channels[w.ab].staged is None, "withdrawn")
    await until(lambda: refusals(w, alice, Reason.WITHDRAWN, mark) == 3, "each one counted")
    assert bob.client.channels[w.ab].current == current
    await still_serving(w)


def answer_with_a_bad_countersignature(user: User) -> None:
    """`user` answers the next Update it receives with an UpdateAccept carrying a signature
    that verifies for nothing, instead of handing it to its client."""

    def bad_accept(original: Callable[[Address, Message], object], peer: Address,
                   msg: Message) -> None:
        if not isinstance(msg, Update):
            original(peer, msg)
            return
        restore()
        user.peers.send(peer, UpdateAccept(msg.channel_id, msg.version, bad_signature()))

    restore = hijack(user, bad_accept)


@pytest_twisted.ensureDeferred
async def test_a_bad_countersignature_on_a_request_is_refused_and_fails_it(world: World) -> None:
    w, alice, bob = world, world.alice, world.bob
    patient(alice, bob)
    before = bob.client.channels[w.ab]
    mark = w.logs.mark()

    answer_with_a_bad_countersignature(alice)
    conn = current_connection(bob.peers, alice.client.address)
    # A request benefits bob: its countersignature is checked at once (a payment's is not:
    # the test below).
    paying = bob.client.send(w.ab, ((ETH, -1),))
    # No other answer can come on that request: it fails at once, not at a timeout.
    await failed_at_once(paying, "bob's request fails", connection_lost=False)
    assert refusals(w, alice, Reason.SIGNATURE, mark) == 1
    # Nothing became fully signed.
    assert bob.client.channels[w.ab].current == before.current
    assert not any(isinstance(n, ChannelNotice) and isinstance(n.event, ev.NewState)
                   and n.channel.channel_id == w.ab for n in bob.notices)
    # Bob keeps serving carol meanwhile, and settles with alice after reconnecting.
    await pays(w.carol, bob, w.cb, 1)
    await reconnected(alice, bob, conn)
    assert before.current is not None
    assert await agreed(alice, bob, w.ab) == before.current.state
    await still_serving(w)


@pytest_twisted.ensureDeferred
async def test_the_error_of_a_bad_countersignature_says_so(world: World) -> None:
    w, alice, bob = world, world.alice, world.bob
    patient(alice, bob)
    answer_with_a_bad_countersignature(alice)
    failure = await failed_at_once(bob.client.send(w.ab, ((ETH, -1),)), "bob's request fails",
                                   connection_lost=False)
    await agreed(alice, bob, w.ab)
    message = failure.getErrorMessage()
    assert "signature" in message and "in time" not in message, message


@pytest_twisted.ensureDeferred
async def test_a_payment_countersigned_falsely_is_undone_at_the_next_sync(world: World) -> None:
    # Bob does not check alice's countersignature on his payment (docs/protocol.md,
    # "Verification by interest"): his user hears it is paid. Alice never signed it; her Sync
    # on the next connection shows it, and bob goes back to the state she holds, which pays
    # him more. She keeps his signature on the payment and may still complete it.
    w, alice, bob = world, world.alice, world.bob
    patient(alice, bob)
    before = bob.client.channels[w.ab]
    assert before.current is not None
    mark = w.logs.mark()

    answer_with_a_bad_countersignature(alice)
    paid = await bob.client.send(w.ab, ((ETH, 1),))
    assert paid.current is not None and paid.current.state.version > before.version
    assert paid.checked is not None
    assert refusals(w, alice, Reason.SIGNATURE, mark) == 0

    conn = current_connection(bob.peers, alice.client.address)
    conn.transport.abortConnection()
    await reconnected(alice, bob, conn)
    assert await agreed(alice, bob, w.ab) == before.current.state
    assert bob.client.channels[w.ab].checked is None
    assert refusals(w, alice, Reason.SIGNATURE, mark) == 1
    assert any(isinstance(n, ChannelNotice) and isinstance(n.event, ev.NewState)
               and n.event.state == before.current.state for n in bob.notices)
    await still_serving(w)


# -- garbage on an authenticated connection -----------------------------------------------------


def negative_balance_update(state: State, key: Signer) -> bytes:
    """An Update frame whose balances are (-1, total + 1). The codec has no way to say a
    negative amount (amounts are unsigned big-endian bytes), so the frame uses msgpack integers
    instead: what a peer that wants a negative balance must send."""
    (a, b), = state.balances
    body = [state.channel_id, state.version + 1, list(state.assets), [[-1, a + b + 1]],
            False, key.sign_state(state)]
    return frame(bytes((FORMAT_VERSION, TYPE_UPDATE)) + msgpack.packb(body, use_bin_type=True))


@pytest_twisted.ensureDeferred
async def test_garbage_and_oversized_frames_drop_the_connection_not_the_channel(
    world: World,
) -> None:
    w, alice, bob = world, world.alice, world.bob
    state = current_state(bob, w.ab)
    hello = encode(Hello(PROTOCOL_VERSION, alice.client.address, b"\x00" * 32))
    attacks = [
        (b"\x00\x00\x00\x05hello", "undecodable frame: unknown format version"),
        (frame(b"\x01\x63\x90"), "undecodable frame: unknown message type 99"),
        (frame(encode(Ping(b"p"))[:2] + b"\xc1"), "undecodable frame: Ping: malformed msgpack"),
        (negative_balance_update(state, alice.client.signer),
         "undecodable frame: Update: balance must be a minimal big-endian uint256"),
        (struct.pack(">I", DEFAULT_MAX_FRAME_SIZE + 1) + b"\x00" * 64, "oversized frame"),
        (struct.pack(">I", 2**32 - 1), "oversized frame"),
        (frame(hello), "Hello after authentication"),
    ]
    for payload, fragment in attacks:
        snapshot = bob.client.channels[w.ab]
        mark = w.logs.mark()
        # Alice's end writes the raw bytes; bob's end reads them.
        conn = current_connection(alice.peers, bob.client.address)
        assert conn.transport is not None
        conn.transport.write(payload)
        await conn.when_closed()
        assert w.logs.warned(f"dropping peer connection 0x{alice.client.address.hex()}",
                             fragment, since=mark), fragment
        # Refused before it reached the channel: only the sync on reconnection may touch it.
        assert bob.client.channels[w.ab].current == snapshot.current
        # Both keep the channel's peer connected: they reconnect and sync.
        await reconnected(alice, bob, conn)
        assert await agreed(alice, bob, w.ab) == state
        state = await pays(alice, bob, w.ab, 1)
    # Carol's connection was never touched.
    assert bob.peers.connection_count(w.carol.client.address) == 1
    await still_serving(w)


# -- a peer that disconnects mid-update ---------------------------------------------------------


def patient(*users: User) -> None:
    """No request of these clients can time out within a test."""
    for user in users:
        user.client.response_timeout = user.client.request_timeout = LONG


async def failed_at_once(paying: Deferred[Channel], what: str,
                         connection_lost: bool = True) -> Failure:
    """The payment's failure; it comes at once (no timer of the clients, LONG, can fire
    within the test) and, if `connection_lost`, says that the connection was lost."""
    result = await outcome(paying, what)
    assert isinstance(result, Failure), "the payment succeeded"
    assert result.check(PeerRequestTimedOut)  # API code 101: the peer may or may not have it
    if connection_lost:
        assert result.check(PeerDisconnected), result.getErrorMessage()
    return result


def drop_on_update(user: User, *, process_first: bool) -> None:
    """On the next Update `user` receives: abort the connection it came on, before handling it
    or right after (then the answer is written but never leaves: an abort discards it)."""

    def drop(original: Callable[[Address, Message], object], peer: Address,
             msg: Message) -> None:
        if not isinstance(msg, Update):
            original(peer, msg)
            return
        restore()
        conn = current_connection(user.peers, peer)
        if process_first:
            # The answer is the first message since the peer spoke, which a TCP connection
            # sends at once (PeerProtocol._send_now): keep it in the transport, as a later one
            # would be, so that the abort discards it.
            conn._sent_at_once = True
            original(peer, msg)
        conn.abort()

    restore = hijack(user, drop)


@pytest.mark.parametrize("process_first", [False, True], ids=["before-handling", "after-accepting"])
@pytest_twisted.ensureDeferred
async def test_payee_drops_the_connection_mid_update(world: World, process_first: bool) -> None:
    w, alice, bob = world, world.alice, world.bob
    patient(alice, bob)
    before = current_state(alice, w.ab)
    conn = current_connection(alice.peers, bob.client.address)
    drop_on_update(bob, process_first=process_first)
    await failed_at_once(alice.client.send(w.ab, ((ETH, ETHER),)), "the payment fails")
    await reconnected(alice, bob, conn)
    # The sync settles what happened: bob either never saw the update or countersigned it.
    state = await agreed(alice, bob, w.ab)
    if process_first:
        assert state.version == before.version + 1
        assert state.balances == ((before.balances[0][0] - ETHER, before.balances[0][1] + ETHER),)
        assert any(isinstance(n, ChannelNotice) and isinstance(n.event, ev.NewState)
                   and n.event.source is ev.Source.SYNC for n in alice.notices)
    else:
        assert state == before
    await still_serving(w)


@pytest_twisted.ensureDeferred
async def test_payer_disconnects_right_after_sending(world: World) -> None:
    w, alice, bob = world, world.alice, world.bob
    patient(alice, bob)
    before = current_state(alice, w.ab)
    conn = current_connection(alice.peers, bob.client.address)
    paying = alice.client.send(w.ab, ((ETH, ETHER),))
    alice.peers.disconnect(bob.client.address)  # graceful: the Update is flushed first
    await failed_at_once(paying, "the payment fails")
    await reconnected(alice, bob, conn)
    # Bob countersigned what reached him; alice adopts it from his sync.
    state = await agreed(alice, bob, w.ab)
    assert state.version == before.version + 1
    assert state.balances == ((before.balances[0][0] - ETHER, before.balances[0][1] + ETHER),)
    await still_serving(w)


@pytest_twisted.ensureDeferred
async def test_requester_disconnects_while_the_user_decides(world: World) -> None:
    w, alice, bob = world, world.alice, world.bob
    patient(alice, bob)
    before = current_state(alice, w.ab)
    conn = current_connection(alice.peers, bob.client.address)
    requesting = alice.client.send(w.ab, ((ETH, -ETHER),))
    question = await bob.update_question()
    assert isinstance(question, UpdateNotice)
    alice.peers.disconnect(bob.client.address)
    await failed_at_once(requesting, "the request fails")
    await reconnected(alice, bob, conn)
    # Bob's user is told the request is gone, and can no longer accept it.
    await bob.next_notice(lambda n: isinstance(n, ChannelNotice)
                          and isinstance(n.event, ev.UpdateWithdrawn))
    with pytest.raises(ResourceNotFound):
        await bob.client.respond_update(w.ab, question.update_id, True)
    assert await agreed(alice, bob, w.ab) == before
    await still_serving(w)


@pytest_twisted.ensureDeferred
async def test_user_accepts_while_the_requester_is_away(world: World) -> None:
    w, alice, bob = world, world.alice, world.bob
    patient(alice, bob)
    before = current_state(alice, w.ab)
    conn = current_connection(alice.peers, bob.client.address)
    requesting = alice.client.send(w.ab, ((ETH, -ETHER),))
    question = await bob.update_question()
    assert isinstance(question, UpdateNotice)
    # Alice's connection breaks (nothing more gets through: her sync after the failed
    # request is lost too), and neither side can dial the other for a while.
    alice_at, bob_at = w.endpoints.pop(alice.client.address), w.endpoints.pop(bob.client.address)
    conn.abort()
    await failed_at_once(requesting, "the request fails")
    await until(lambda: not bob.peers.is_connected(alice.client.address), "bob saw the drop")
    # Bob's user says yes meanwhile: bob countersigns; his answer cannot be delivered.
    accepted = await bob.client.respond_update(w.ab, question.update_id, True)
    assert accepted.current is not None and accepted.current.state.version == before.version + 1
    w.endpoints[alice.client.address], w.endpoints[bob.client.address] = alice_at, bob_at
    await reconnected(alice, bob, conn)
    # Alice learns from bob's sync that her request went through after all.
    state = await agreed(alice, bob, w.ab)
    assert state == accepted.current.state
    await still_serving(w)


@pytest_twisted.ensureDeferred
async def test_an_immediate_retry_after_a_dropped_connection_succeeds(world: World) -> None:
    w = world
    # Both dial each other at once after the drop; the payer is the side whose dial loses.
    payer, payee = sorted((w.alice, w.bob), key=lambda u: u.client.address, reverse=True)
    patient(payer, payee)
    payer.client.request_timeout = 3.0  # the retry's wait for a link; LONG + 3 s for an answer
    paying = payer.client.send(w.ab, ((ETH, ETHER),))
    payer.peers.disconnect(payee.client.address)
    await failed_at_once(paying, "the payment fails")
    # The user tries again at once: the client reconnects (and syncs) before it signs.
    channel = await payer.client.send(w.ab, ((ETH, 1),))
    assert channel.current is not None
    assert await agreed(payer, payee, w.ab) == channel.current.state
    await still_serving(w)


@pytest_twisted.ensureDeferred
async def test_a_contact_flooding_proposals_is_capped_and_bob_serves(world: World) -> None:
    w, bob, mallory = world, world.bob, world.mallory
    request = OpenRequest(bob.client.address, (ETH,), ((1, 0),), 600)
    flood = [mallory.client.open_channel(request) for _ in range(MAX_PROPOSALS_PER_PEER + 8)]
    for opening in flood:
        opening.addErrback(lambda failure: failure)  # collected below
    mark = w.logs.mark()
    await until(lambda: sum(d.called for d in flood) == 8, "the excess is refused at once")
    refused = [d.result for d in flood if d.called]
    assert all(isinstance(f, Failure) and f.check(PeerRejected) for f in refused)
    assert "wait for an answer already" in refused[0].getErrorMessage()
    assert w.logs.warned("wait for an answer already", since=mark)
    questions = [n for n in bob.notices if isinstance(n, ProposalNotice)]
    assert len(questions) == MAX_PROPOSALS_PER_PEER
    # Bob's user says no to each; then mallory may propose again, and bob serves everyone.
    for question in questions:
        assert isinstance(question, ProposalNotice)
        await bob.client.respond_proposal(question.proposal.proposal_id, False)
        bob.notices.remove(question)
    await until(lambda: all(d.called for d in flood), "every proposal answered")
    assert all(isinstance(d.result, Failure) and d.result.check(PeerRejected) for d in flood)
    for opening in flood:
        opening.addErrback(lambda failure: None)  # read: not an unhandled error when collected
    another = mallory.client.open_channel(request)
    question = await bob.proposal()
    assert isinstance(question, ProposalNotice)
    await bob.client.respond_proposal(question.proposal.proposal_id, False)
    with pytest.raises(PeerRejected, match="rejected by the user"):
        await another
    await still_serving(w)
