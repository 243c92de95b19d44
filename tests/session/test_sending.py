"""The send queue in memory, on a fake clock: one update in flight per channel, waiting
payments merged, requests alone, collisions retried, the user told why an update failed."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent

from perund.channel.events import Reason
from perund.channel.records import Channel
from perund.channel.types import ETH
from perund.errors import (
    FailedPrecondition,
    InvalidArgument,
    PeerDisconnected,
    PeerRejected,
    PeerRequestTimedOut,
    PeerUnreachable,
)
from perund.session.notices import UpdateNotice
from perund.session.sending import MAX_BATCH, RETRY_DELAY
from perund.wire.messages import Sync, Update, UpdateAccept, UpdateReject

from .fakes import ETHER, Net, Side, open_channel, result, side


def _updates(sender: Side) -> list[Update]:
    return [msg for _, msg in sender.links.sent if isinstance(msg, Update)]


def _fired(sends: list[Deferred[Channel]]) -> list[Channel]:
    return [result(d) for d in sends]


def test_waiting_payments_share_an_update_and_a_request_goes_alone() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob, ours=ETHER, theirs=ETHER)
    sent = [alice.client.send(cid, ((ETH, n),)) for n in range(1, 51)]
    asking = alice.client.send(cid, ((ETH, -7),))
    clock.advance(0)

    # The first went alone; the 49 that waited behind it went out together.
    assert [u.state.version for u in _updates(alice)] == [1, 2, 3]
    assert [c.version for c in _fired(sent)] == [1] + [2] * 49
    assert bob.client.channels[cid].latest.balances == ((ETHER - 1275, ETHER + 1275),)
    question = bob.told(UpdateNotice)[-1]
    assert isinstance(question, UpdateNotice)
    bob.client.respond_update(cid, question.update_id, True)
    clock.advance(0)
    assert result(asking).latest.balances == ((ETHER - 1268, ETHER + 1268),)


def test_at_most_max_batch_payments_share_an_update() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob, ours=ETHER, theirs=ETHER)
    sent = [alice.client.send(cid, ((ETH, 1),)) for _ in range(MAX_BATCH + 11)]
    clock.advance(0)

    assert [c.version for c in _fired(sent)] == [1] + [2] * MAX_BATCH + [3] * 10


def test_payments_that_together_exceed_the_balance_go_one_by_one() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob, ours=ETHER, theirs=0)
    first = alice.client.send(cid, ((ETH, 1),))
    too_much = alice.client.send(cid, ((ETH, ETHER),))
    third = alice.client.send(cid, ((ETH, 2),))
    clock.advance(0)

    assert result(first).version == 1
    with pytest.raises(InvalidArgument):
        result(too_much)
    assert result(third).latest.balances == ((ETHER - 3, 3),)


def test_payments_both_ways_at_once_collide_and_are_retried() -> None:
    clock = Clock()
    net = Net(clock, latency=0.001)
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob, ours=ETHER, theirs=ETHER)
    from_alice = alice.client.send(cid, ((ETH, 1),))
    from_bob = bob.client.send(cid, ((ETH, 2),))
    clock.pump([RETRY_DELAY / 10] * 40)

    # Both version 1 were refused; participant 0 (alice) retried at once, bob after a pause.
    assert result(from_alice).version == 2
    assert result(from_bob).version == 3
    assert [u.state.version for u in _updates(alice)] == [1, 2]
    assert [u.state.version for u in _updates(bob)] == [1, 3]
    assert alice.client.channels[cid].latest == bob.client.channels[cid].latest
    assert alice.client.channels[cid].latest.balances == ((ETHER + 1, ETHER - 1),)
    # A collision is no misbehaviour: it counts towards neither side's cut-off of the other
    # (two users paying each other at once were cut off after 100 collisions).
    assert alice.links.refusals == [] and bob.links.refusals == []


def test_after_a_collision_the_peer_gets_its_turn_even_if_our_retry_is_declined() -> None:
    """alice (participant 0) retries a request at once; bob's user declines it late, just
    before bob's pause for her turn ends. Her next payment must wait for bob's retry, not
    cross it: crossing, they collided again, over and over while she kept paying (a close of
    bob's then ran out of retries and went on-chain)."""
    clock = Clock()
    net = Net(clock, latency=0.001)
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob, ours=ETHER, theirs=ETHER)

    def decline_late(notice: object) -> None:
        if isinstance(notice, UpdateNotice):
            clock.callLater(0.0075, bob.client.respond_update, cid, notice.update_id, False)

    bob.client.observers.append(decline_late)
    requesting = alice.client.send(cid, ((ETH, -5),))
    next_payment = alice.client.send(cid, ((ETH, 3),))  # waits behind the request
    from_bob = bob.client.send(cid, ((ETH, 2),))
    clock.pump([RETRY_DELAY / 10] * 100)

    with pytest.raises(PeerRejected, match="rejected by the user"):
        result(requesting)
    assert len(_updates(bob)) == 2  # one collision, one retry that went through
    result(from_bob)
    result(next_payment)
    assert alice.client.channels[cid].latest == bob.client.channels[cid].latest
    assert alice.client.channels[cid].latest.balances == ((ETHER - 3 + 2, ETHER + 3 - 2),)


def test_nothing_is_signed_for_a_peer_that_cannot_be_reached() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob)
    net.cut(bob.address)
    paying = alice.client.send(cid, ((ETH, 1),))
    clock.advance(0)

    with pytest.raises(PeerUnreachable):
        result(paying)
    assert _updates(alice) == [] and alice.client.channels[cid].version == 0


def test_the_user_is_told_why_an_update_got_no_answer() -> None:
    clock = Clock()
    net = Net(clock, latency=1.0)
    alice, bob = side(net, response_timeout=5.0, request_timeout=5.0), side(net)
    cid = open_channel(net, alice, bob)

    dropped = alice.client.send(cid, ((ETH, 1),))
    clock.advance(0.5)  # the update is on its way: the link drops under it
    net.cut(bob.address)
    clock.advance(0)
    with pytest.raises(PeerDisconnected):
        result(dropped)

    net.mend(bob.address)
    clock.pump([1.0] * 5)
    bob.links.owner = None  # bob's node hangs: nothing it receives is answered
    silent = alice.client.send(cid, ((ETH, 1),))
    clock.pump([1.0] * 9)
    assert not silent.called
    clock.advance(1.0)  # the peer's user time plus its node's time
    with pytest.raises(PeerRequestTimedOut):
        result(silent)


def test_sends_fail_at_once_when_the_session_stops() -> None:
    clock = Clock()
    net = Net(clock, latency=1.0)
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob)
    in_flight = alice.client.send(cid, ((ETH, 1),))
    waiting = alice.client.send(cid, ((ETH, 2),))
    alice.client.stop()

    with pytest.raises(FailedPrecondition, match="closing"):
        result(waiting)
    assert not in_flight.called  # its fate is settled by the sync after the restart


def test_two_unpaced_streams_on_one_channel_both_get_through() -> None:
    """Each side pays again the moment its last payment ends: after a collision the winner
    yields the next turn, so neither side's payments run out of retries."""
    clock = Clock()
    net = Net(clock, latency=0.001)
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob, ours=ETHER, theirs=ETHER)
    outcomes: dict[str, list[bool]] = {"alice": [], "bob": []}

    def stream(name: str, payer: Side, amount: int) -> None:
        def again(result: object) -> None:
            outcomes[name].append(isinstance(result, Channel))
            if len(outcomes[name]) < 200:
                stream(name, payer, amount)

        payer.client.send(cid, ((ETH, amount),)).addBoth(again)

    stream("alice", alice, 1000)
    stream("bob", bob, 1)
    clock.pump([RETRY_DELAY / 10] * 20_000)

    assert len(outcomes["alice"]) == len(outcomes["bob"]) == 200
    assert all(outcomes["alice"]) and all(outcomes["bob"])
    balances = alice.client.channels[cid].latest.balances
    assert balances == bob.client.channels[cid].latest.balances
    assert balances == ((ETHER - 200 * 1000 + 200, ETHER + 200 * 1000 - 200),)


def test_a_payment_whose_refused_attempt_the_peer_completes_is_paid_once() -> None:
    """A dishonest peer refuses our update as if it had signed that version already (we retry
    above it), then syncs the refused attempt, countersigned after all. The send is paid by
    that attempt: the user is told it succeeded, and its retry, which the peer may also
    countersign, pays nothing twice. (Found by tests/session/test_hostile_campaign.py: the
    retry was reported "did not complete" while the money had moved.)"""
    clock = Clock()
    net = Net(clock, latency=0.001)
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob, ours=ETHER, theirs=ETHER)
    bob.links.owner = None  # bob's node answers nothing by itself: the test answers for it
    paying = alice.client.send(cid, ((ETH, 5),))
    clock.advance(0.001)
    (first,) = _updates(alice)
    bob.links.send(alice.address, UpdateReject(cid, 1, f"{Reason.VERSION.value} (signed up to 1)"))
    clock.pump([0.001] * 5)
    retry = _updates(alice)[-1]
    assert retry.state.version == 2 and not paying.called

    signed = (first.signature, bob.client.signer.sign_state(first.state))
    bob.links.send(alice.address, Sync(first.state, signed))
    clock.pump([0.001] * 5)
    assert result(paying).latest == first.state
    assert alice.client.channels[cid].latest.balances == ((ETHER - 5, ETHER + 5),)
    # The peer countersigns the retry too: the same payment, from the same base; paid once.
    bob.links.send(alice.address, UpdateAccept(cid, 2, bob.client.signer.sign_state(retry.state)))
    clock.pump([0.001] * 5)
    assert alice.client.channels[cid].latest == retry.state
    assert retry.state.balances == ((ETHER - 5, ETHER + 5),)
    assert len(_updates(alice)) == 2


def test_a_refused_update_the_peer_completes_later_is_named_in_a_warning() -> None:
    """The peer refuses our payment for good (the user is told), then syncs it countersigned:
    it holds our signature, so the payment is made. The channel follows the chain's truth and
    the log says that what the user was told failed is paid after all."""
    clock = Clock()
    net = Net(clock, latency=0.001)
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob, ours=ETHER, theirs=ETHER)
    bob.links.owner = None
    paying = alice.client.send(cid, ((ETH, 5),))
    clock.advance(0.001)
    (update,) = _updates(alice)
    bob.links.send(alice.address, UpdateReject(cid, 1, "no"))
    clock.pump([0.001] * 5)
    with pytest.raises(PeerRejected, match="no"):
        result(paying)

    signed = (update.signature, bob.client.signer.sign_state(update.state))
    with capturedLogs() as logged:
        bob.links.send(alice.address, Sync(update.state, signed))
        clock.pump([0.001] * 5)
    assert alice.client.channels[cid].latest == update.state
    warnings = [formatEvent(e) for e in logged if e["log_level"] is LogLevel.warn]
    assert warnings == [f"channel 0x{cid.hex()}: the peer completed our update 1 after refusing "
                        "it (no): what it pays is paid after all"]


def test_a_send_made_while_an_earlier_update_is_unresolved_waits_for_it() -> None:
    """Our update got no answer: its fate is unknown until the peer answers it or syncs, and
    nothing can be signed meanwhile. A send made then waits for that (it used to fail at once
    with "an earlier update timed out"), and goes out once the late answer is in."""
    clock = Clock()
    net = Net(clock, latency=0.001)
    alice, bob = side(net, response_timeout=5.0, request_timeout=5.0), side(net)
    cid = open_channel(net, alice, bob, ours=ETHER, theirs=ETHER)
    owner, bob.links.owner = bob.links.owner, None  # bob's node is silent for a while
    first = alice.client.send(cid, ((ETH, 1),))
    clock.pump([1.0] * 11)
    with pytest.raises(PeerRequestTimedOut):
        result(first)
    second = alice.client.send(cid, ((ETH, 2),))
    clock.pump([1.0] * 4)
    assert not second.called
    (update,) = _updates(alice)  # only the first went out

    bob.links.send(alice.address, UpdateAccept(cid, 1, bob.client.signer.sign_state(update.state)))
    bob.links.owner = owner
    clock.pump([0.001] * 10)
    assert result(second).latest.balances == ((ETHER - 3, ETHER + 3),)
    assert alice.client.channels[cid].latest == bob.client.channels[cid].latest


def test_a_send_waiting_for_an_unresolved_update_fails_after_the_request_timeout() -> None:
    clock = Clock()
    net = Net(clock, latency=0.001)
    alice, bob = side(net, response_timeout=5.0, request_timeout=5.0), side(net)
    cid = open_channel(net, alice, bob, ours=ETHER, theirs=ETHER)
    bob.links.owner = None
    first = alice.client.send(cid, ((ETH, 1),))
    clock.pump([1.0] * 11)
    assert first.called
    first.addErrback(lambda _: None)
    waiting = alice.client.send(cid, ((ETH, 2),))
    clock.pump([1.0] * 4 + [0.9])
    assert not waiting.called
    clock.advance(0.2)
    with pytest.raises(FailedPrecondition, match="an earlier update timed out"):
        result(waiting)
