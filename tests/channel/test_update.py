"""Updates: the proposer's side, every responder rule, the user policy, collisions, timeouts and
the final update."""

from __future__ import annotations

from dataclasses import replace

import pytest

from perund.channel.changes import (
    Funded,
    OwnUpdate,
    Registered,
    RespondUpdate,
    UpdateAcceptReceived,
    UpdateReceived,
    UpdateRejectReceived,
    UpdateTimedOut,
    UserTimedOut,
)
from perund.channel.encoding import signing_digest
from perund.channel.events import (
    ConcludeFinal,
    NewState,
    Opened,
    Persist,
    Reason,
    Refused,
    Register,
    SendSync,
    SendUpdate,
    SendUpdateAccept,
    SendUpdateReject,
    Source,
    UpdateFailed,
    UpdateFailure,
    UpdateKind,
    UpdateNeedsUser,
)
from perund.channel.machine import transition
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.types import ETH, ChannelID, Signature, State, SubAlloc
from perund.errors import FailedPrecondition, InvalidArgument, ResourceNotFound
from tests.channel.factories import (
    ALICE,
    BOB,
    ETHER,
    MALLORY,
    TOKEN,
    deliver,
    make_pair,
    make_request,
    next_state,
    sign,
)


def pay(channel: Channel, amount: int, asset: bytes = ETH, *, final: bool = False) -> tuple:
    signer = ALICE if channel.index == 0 else BOB
    return transition(channel, OwnUpdate(signer, ((asset, amount),), final))  # type: ignore[arg-type]


def test_payment_round_trip() -> None:
    alice, bob = make_pair()
    assert alice.current is not None
    alice1, events = pay(alice, 3 * ETHER)
    staged = alice1.staged
    assert staged is not None and alice1.phase is Phase.UPDATING
    expected = next_state(alice, balances=((7 * ETHER, 13 * ETHER),))
    assert staged.state == expected and staged.proposer == 0
    assert events == (Persist(alice1), SendUpdate(BOB.address, expected, staged.signature))

    bob1, events = deliver(bob, events[1], ALICE, BOB)
    assert bob1.phase is Phase.OPEN and bob1.current is not None
    assert bob1.current.state == expected
    bob_sig = bob1.current.signatures[1]
    assert bob1.current.signatures == (staged.signature, bob_sig)
    assert events == (
        Persist(bob1),
        SendUpdateAccept(ALICE.address, alice.channel_id, 1, bob_sig),
        NewState(alice.channel_id, expected, Source.PEER),
    )

    alice2, events = deliver(alice1, events[1], BOB, ALICE)
    assert alice2.phase is Phase.OPEN and alice2.staged is None
    assert alice2.current == bob1.current
    # The payee holds the state (it persisted it before answering): our user hears at once.
    assert events == (Persist(alice2, False, by_us=True),
                      NewState(alice.channel_id, expected, Source.OWN))


def test_payments_in_both_directions_and_several_assets() -> None:
    alice, bob = make_pair(make_request(assets=(ETH, TOKEN), balances=((5, 5), (100, 0))))
    alice, events = transition(alice, OwnUpdate(ALICE, ((ETH, 2), (TOKEN, 40))))
    bob, events = deliver(bob, events[1], ALICE, BOB)
    alice, _ = deliver(alice, events[1], BOB, ALICE)
    bob, events = transition(bob, OwnUpdate(BOB, ((ETH, 6),)))
    alice, events = deliver(alice, events[1], BOB, ALICE)
    bob, _ = deliver(bob, events[1], ALICE, BOB)
    assert alice.current == bob.current
    assert alice.current is not None
    assert alice.current.state.balances == ((9, 1), (60, 40))
    assert alice.current.state.version == 2


# --- the user's mistakes raise -----------------------------------------------------------------


def test_paying_more_than_the_balance_is_an_invalid_argument() -> None:
    alice, _ = make_pair()
    with pytest.raises(InvalidArgument) as caught:
        pay(alice, 10 * ETHER + 1)
    assert caught.value.data == {
        "name": "amount",
        "value": str(10 * ETHER + 1),
        "requirement": f"at most {10 * ETHER}",
        "asset": "0x" + bytes(ETH).hex(),
        "available": str(10 * ETHER),
    }


def test_requesting_more_than_the_peer_has_is_an_invalid_argument() -> None:
    alice, _ = make_pair()
    with pytest.raises(InvalidArgument, match="peer's balance"):
        pay(alice, -(10 * ETHER + 1))


def test_paying_in_an_asset_of_another_channel_is_an_invalid_argument() -> None:
    alice, _ = make_pair()
    with pytest.raises(InvalidArgument) as caught:
        pay(alice, 1, TOKEN)
    assert caught.value.data["name"] == "currency"


def test_a_float_amount_is_an_invalid_argument() -> None:
    alice, _ = make_pair()
    with pytest.raises(InvalidArgument):
        transition(alice, OwnUpdate(ALICE, ((ETH, 1.5),)))  # type: ignore[arg-type]


def test_one_update_in_flight_per_channel() -> None:
    alice, _ = make_pair()
    alice1, _ = pay(alice, 1)
    with pytest.raises(FailedPrecondition, match="in flight"):
        pay(alice1, 1)


def test_no_update_before_funding() -> None:
    alice, _ = make_pair(funded=False)
    with pytest.raises(FailedPrecondition, match="funding"):
        pay(alice, 1)


def test_no_update_after_a_final_state() -> None:
    alice, bob = make_pair()
    alice, bob = close(alice, bob)
    with pytest.raises(FailedPrecondition, match="closing"):
        pay(alice, 1)


def test_signing_with_the_wrong_key_is_a_bug() -> None:
    alice, _ = make_pair()
    with pytest.raises(Exception, match="signer"):
        transition(alice, OwnUpdate(BOB, ((ETH, 1),)))


# --- every rule the responder checks ------------------------------------------------------------


def receive(bob: Channel, state: State, signature: Signature | None = None, sender=ALICE) -> tuple:
    sig = signature if signature is not None else sign(ALICE, state)
    return transition(bob, UpdateReceived(sender.address, state, sig, BOB))


def assert_refused(bob: Channel, state: State, reason: Reason, **kwargs: object) -> None:
    same, events = receive(bob, state, **kwargs)  # type: ignore[arg-type]
    assert same is bob
    assert events == (
        Refused(bob.channel_id, ALICE.address, reason, f"version {state.version}"),
        SendUpdateReject(ALICE.address, state.channel_id, state.version, reason.value),
    )


def paid(bob: Channel, amount: int = ETHER) -> State:
    assert bob.current is not None
    ((b0, b1),) = bob.current.state.balances
    return next_state(bob, balances=((b0 - amount, b1 + amount),))


def test_rule_wrong_channel_id() -> None:
    _, bob = make_pair()
    assert_refused(
        bob, replace(paid(bob), channel_id=ChannelID(b"\x66" * 32)), Reason.WRONG_CHANNEL
    )


@pytest.mark.parametrize("delta", [0, -1])
def test_rule_version_is_above_current(delta: int) -> None:
    alice, bob = make_pair()
    alice, events = pay(alice, 1)
    bob, _ = deliver(bob, events[1], ALICE, BOB)  # version 1
    low = replace(paid(bob), version=1 + delta)
    same, events = receive(bob, low)
    assert same is bob
    # The reject names the version to propose above (as for one we signed: below).
    assert events == (
        Refused(bob.channel_id, ALICE.address, Reason.VERSION, f"version {low.version}"),
        SendUpdateReject(ALICE.address, low.channel_id, low.version,
                         f"{Reason.VERSION.value} (signed up to 1)"),
    )


def test_versions_may_skip() -> None:
    """A proposer whose refused update used a version moves past it (`signed_up_to`)."""
    alice, bob = make_pair()
    alice, events = pay(alice, 1)
    bob, _ = deliver(bob, events[1], ALICE, BOB)  # version 1
    new, events = receive(bob, replace(paid(bob), version=5))
    assert new.current is not None and new.current.state.version == 5


def test_rule_totals_unchanged() -> None:
    _, bob = make_pair()
    inflated = next_state(bob, balances=((10 * ETHER, 11 * ETHER),))
    assert_refused(bob, inflated, Reason.TOTALS)


def test_rule_no_negative_balance() -> None:
    _, bob = make_pair()
    good = paid(bob)
    # A state with a negative balance cannot be built normally; a sloppy decoder might.
    hostile = object.__new__(State)
    for field in ("channel_id", "version", "assets", "is_final"):
        object.__setattr__(hostile, field, getattr(good, field))
    object.__setattr__(hostile, "balances", ((-1 * ETHER, 21 * ETHER),))
    assert_refused(bob, hostile, Reason.NEGATIVE, signature=Signature(b"\x00" * 65))


def test_rule_assets_unchanged() -> None:
    _, bob = make_pair()
    assert_refused(bob, replace(paid(bob), assets=(TOKEN,)), Reason.ASSETS)


def test_rule_locked_unchanged() -> None:
    # A peer cannot slip funds locked for a virtual channel into a state: free totals unchanged,
    # the lock would still promise more than the channel holds.
    _, bob = make_pair()
    lock = SubAlloc(ChannelID(b"\x5a" * 32), (5 * ETHER,), (1, 0))
    assert_refused(bob, replace(paid(bob), locked=(lock,)), Reason.LOCKED)


def test_rule_current_not_final() -> None:
    alice, bob = make_pair()
    alice, bob = close(alice, bob)
    assert bob.current is not None
    assert_refused(bob, next_state(bob, is_final=False), Reason.FINAL)


def test_rule_channel_open() -> None:
    _, bob = make_pair()
    assert bob.current is not None
    disputed, _ = transition(bob, Registered(0, 5000, False, bob.current.state.balances))
    assert_refused(disputed, paid(bob), Reason.NOT_OPEN)


def test_updates_from_a_peer_that_saw_the_funding_first_are_taken() -> None:
    alice, bob = make_pair(funded=False)
    alice, _ = transition(alice, Funded())
    # Alice's watcher saw both deposits; Bob's has not yet. Alice pays, Bob takes it.
    alice, events = pay(alice, ETHER)
    bob1, events = deliver(bob, events[1], ALICE, BOB)
    assert bob1.phase is Phase.FUNDING and bob1.current is not None
    assert bob1.current.state.version == 1
    alice, _ = deliver(alice, events[1], BOB, ALICE)
    # A request goes to Bob's user; the funding news arrives meanwhile.
    alice, events = pay(alice, -ETHER)
    bob2, (question,) = deliver(bob1, events[1], ALICE, BOB)
    assert isinstance(question, UpdateNeedsUser) and bob2.phase is Phase.FUNDING
    bob3, events = transition(bob2, Funded())
    assert bob3.phase is Phase.UPDATING and events == (Persist(bob3), Opened(bob.channel_id))
    bob4, _ = transition(bob3, RespondUpdate(BOB, question.update_id, True))
    assert bob4.phase is Phase.OPEN
    # Bob himself proposes nothing before he saw the funding.
    with pytest.raises(FailedPrecondition, match="funding"):
        pay(bob2, 1)


def test_rule_signature_malformed() -> None:
    _, bob = make_pair()
    assert_refused(bob, paid(bob), Reason.SIGNATURE, signature=Signature(b"\x01" * 65))


def test_rule_signature_by_the_wrong_key() -> None:
    _, bob = make_pair()
    state = paid(bob)
    assert_refused(bob, state, Reason.SIGNATURE, signature=sign(MALLORY, state))


def test_rule_signature_on_another_state() -> None:
    _, bob = make_pair()
    state = paid(bob)
    other = paid(bob, 2 * ETHER)
    assert_refused(bob, state, Reason.SIGNATURE, signature=sign(ALICE, other))


def test_rule_sender_is_the_peer() -> None:
    _, bob = make_pair()
    state = paid(bob)
    same, events = transition(bob, UpdateReceived(MALLORY.address, state, sign(ALICE, state), BOB))
    assert same is bob
    assert events == (Refused(bob.channel_id, MALLORY.address, Reason.NOT_PEER, "version 1"),)


def test_rule_one_update_in_flight_on_the_responder() -> None:
    _, bob = make_pair()
    request = next_state(bob, balances=((11 * ETHER, 9 * ETHER),))
    bob1, _ = receive(bob, request)
    assert bob1.phase is Phase.UPDATING
    assert_refused(bob1, paid(bob), Reason.IN_FLIGHT)


def test_the_same_update_again_while_it_waits_is_ignored() -> None:
    """A duplicated frame of the update we hold (a peer's retry, a relay's duplicate): refusing
    it would answer the peer's pending request as refused while we still answer the one we
    hold, and the two sides would part (the virtual-channel review's finding)."""
    _, bob = make_pair()
    request = next_state(bob, balances=((11 * ETHER, 9 * ETHER),))
    bob1, _ = receive(bob, request)
    again, events = receive(bob1, request)
    assert again is bob1 and events == ()
    # Another update of that version is refused as before.
    other = next_state(bob, balances=((12 * ETHER, 8 * ETHER),))
    assert_refused(bob1, other, Reason.IN_FLIGHT)


# --- policy: what goes to the user ---------------------------------------------------------------


def test_a_payment_request_goes_to_the_user_who_accepts() -> None:
    _, bob = make_pair()
    request = next_state(bob, balances=((11 * ETHER, 9 * ETHER),))
    bob1, events = receive(bob, request)
    update_id = signing_digest(request)
    assert bob1.phase is Phase.UPDATING and bob1.current == bob.current
    assert events == (UpdateNeedsUser(bob.channel_id, update_id, request, UpdateKind.REQUEST),)

    bob2, events = transition(bob1, RespondUpdate(BOB, update_id, True))
    assert bob2.phase is Phase.OPEN and bob2.current is not None
    assert bob2.current.state == request
    assert events == (
        Persist(bob2),
        SendUpdateAccept(ALICE.address, bob.channel_id, 1, bob2.current.signatures[1]),
        NewState(bob.channel_id, request, Source.PEER),
    )


def test_a_payment_request_the_user_rejects() -> None:
    _, bob = make_pair()
    request = next_state(bob, balances=((11 * ETHER, 9 * ETHER),))
    bob1, _ = receive(bob, request)
    bob2, events = transition(bob1, RespondUpdate(BOB, signing_digest(request), False))
    assert bob2 == bob.evolve(signed_up_to=1)
    assert events == (SendUpdateReject(ALICE.address, bob.channel_id, 1, "rejected by the user"),)
    # The same update again (a replay) is no new question: its version is spent. (A lock the
    # intermediary refused, replayed with its pair later, was matched and signed.)
    same, events = receive(bob2, request)
    assert same is bob2 and isinstance(events[0], Refused) and events[0].reason is Reason.VERSION


def test_a_payment_request_the_user_lets_expire() -> None:
    _, bob = make_pair()
    request = next_state(bob, balances=((11 * ETHER, 9 * ETHER),))
    bob1, _ = receive(bob, request)
    bob2, events = transition(bob1, UserTimedOut(signing_digest(request)))
    assert bob2 == bob.evolve(signed_up_to=1)
    assert events == (
        SendUpdateReject(ALICE.address, bob.channel_id, 1, "the user did not answer in time"),
    )
    # The answer arriving after the expiry finds nothing to answer.
    with pytest.raises(ResourceNotFound):
        transition(bob2, RespondUpdate(BOB, signing_digest(request), True))
    assert transition(bob2, UserTimedOut(signing_digest(request))) == (bob2, ())


def test_answering_an_unknown_update_is_resource_not_found() -> None:
    _, bob = make_pair()
    with pytest.raises(ResourceNotFound) as caught:
        transition(bob, RespondUpdate(BOB, b"\x42" * 32, True))
    assert caught.value.data == {"type": "update", "id": "0x" + "42" * 32}


def test_a_user_who_confirms_everything_sees_incoming_payments() -> None:
    _, bob = make_pair(confirm_updates=(False, True))
    state = paid(bob)
    bob1, events = receive(bob, state)
    assert events == (
        UpdateNeedsUser(bob.channel_id, signing_digest(state), state, UpdateKind.PAYMENT),
    )
    assert bob1.phase is Phase.UPDATING


# --- the proposer's answers ---------------------------------------------------------------------


def test_peer_rejects_our_update() -> None:
    alice, _ = make_pair()
    alice1, _ = pay(alice, 1)
    alice2, events = transition(
        alice1, UpdateRejectReceived(BOB.address, alice.channel_id, 1, "no thanks")
    )
    # The refused version is never reused; the first update reserved the next 1,000.
    assert alice2 == replace(alice, signed_up_to=1, reserved=1000)
    assert events == (UpdateFailed(alice.channel_id, 1, UpdateFailure.REJECTED, "no thanks"),)


def test_our_update_times_out_then_waits_for_a_sync() -> None:
    alice, _ = make_pair()
    alice1, _ = pay(alice, 1)
    alice2, events = transition(alice1, UpdateTimedOut(1))
    assert alice2.phase is Phase.OPEN and alice2.needs_sync and alice2.staged is None
    assert alice.current is not None
    assert events == (
        Persist(alice2),
        UpdateFailed(alice.channel_id, 1, UpdateFailure.TIMED_OUT, "no answer from the peer"),
        SendSync(BOB.address, alice.current.state, alice.current.signatures),
    )
    with pytest.raises(FailedPrecondition, match="sync"):
        pay(alice2, 1)
    # A stale timer for an update that is gone does nothing.
    assert transition(alice2, UpdateTimedOut(1)) == (alice2, ())


def test_accept_for_another_version_is_refused() -> None:
    alice, bob = make_pair()
    alice1, events = pay(alice, 1)
    _, answer = deliver(bob, events[1], ALICE, BOB)
    accept = answer[1]
    assert isinstance(accept, SendUpdateAccept)
    same, events = transition(
        alice1, UpdateAcceptReceived(BOB.address, alice.channel_id, 2, accept.signature)
    )
    assert same is alice1
    assert events == (Refused(alice.channel_id, BOB.address, Reason.NOTHING_STAGED, "version 2"),)


def test_accept_with_a_bad_countersignature_keeps_the_update_in_flight() -> None:
    # A request: it raises our balance, so the countersignature is checked (a payment's is
    # not: tests/channel/test_verification.py).
    alice, _ = make_pair()
    alice1, _ = pay(alice, -1)
    assert alice1.staged is not None
    forged = MALLORY.sign_digest(alice1.staged.digest)
    same, events = transition(
        alice1, UpdateAcceptReceived(BOB.address, alice.channel_id, 1, forged)
    )
    assert same is alice1
    assert events == (Refused(alice.channel_id, BOB.address, Reason.SIGNATURE, "version 1"),)


def test_accept_from_a_stranger_is_refused() -> None:
    alice, _ = make_pair()
    alice1, _ = pay(alice, 1)
    assert alice1.staged is not None
    sig = MALLORY.sign_digest(alice1.staged.digest)
    same, events = transition(
        alice1, UpdateAcceptReceived(MALLORY.address, alice.channel_id, 1, sig)
    )
    assert same is alice1
    assert events == (Refused(alice.channel_id, MALLORY.address, Reason.NOT_PEER),)


def test_reject_for_another_channel_is_refused() -> None:
    alice, _ = make_pair()
    alice1, _ = pay(alice, 1)
    other = ChannelID(b"\x55" * 32)
    same, events = transition(alice1, UpdateRejectReceived(BOB.address, other, 1, "x"))
    assert same is alice1
    assert events == (Refused(alice.channel_id, BOB.address, Reason.WRONG_CHANNEL),)


# --- collisions ---------------------------------------------------------------------------------


def test_collision_both_sides_refuse_and_neither_signs_a_second_state_of_the_version() -> None:
    alice, bob = make_pair()
    alice1, a_events = pay(alice, 1)
    bob1, b_events = pay(bob, 2)
    for me, staged, theirs, sender, receiver in (
        (alice1, alice1, b_events[1], BOB, ALICE),
        (bob1, bob1, a_events[1], ALICE, BOB),
    ):
        same, events = deliver(me, theirs, sender, receiver)
        assert same is staged
        assert events == (
            Refused(me.channel_id, sender.address, Reason.COLLISION, "version 1"),
            SendUpdateReject(sender.address, me.channel_id, 1, Reason.COLLISION.value),
        )
    # Each side's reject reaches the other: both updates fail as collisions, and the next
    # update skips the version both signed.
    alice2, events = transition(
        alice1, UpdateRejectReceived(BOB.address, alice.channel_id, 1, Reason.COLLISION.value))
    assert events == (UpdateFailed(alice.channel_id, 1, UpdateFailure.COLLISION,
                                   Reason.COLLISION.value),)
    assert alice2.phase is Phase.OPEN and alice2.signed_up_to == 1
    bob2, _ = transition(
        bob1, UpdateRejectReceived(ALICE.address, bob.channel_id, 1, Reason.COLLISION.value))
    alice3, events = pay(alice2, 1)
    assert alice3.staged is not None and alice3.staged.state.version == 2
    bob3, events = deliver(bob2, events[1], ALICE, BOB)
    assert bob3.current is not None and bob3.current.state.version == 2


def test_a_refused_update_is_never_followed_by_another_state_of_its_version() -> None:
    """The peer keeps our signature on an update it refused and could countersign it later:
    two fully signed states of one version would let it register the one it prefers."""
    alice, bob = make_pair()
    alice1, events = pay(alice, 1)
    refused = events[1]
    assert isinstance(refused, SendUpdate)
    alice2, _ = transition(alice1, UpdateRejectReceived(BOB.address, alice.channel_id, 1, "no"))
    _alice3, events = pay(alice2, 2)
    assert isinstance(events[1], SendUpdate)
    assert events[1].state.version == 2 != refused.state.version
    # And the responder takes the skipped version.
    bob1, events = deliver(bob, events[1], ALICE, BOB)
    assert bob1.current is not None and bob1.current.state.version == 2
    assert bob1.signed_up_to == 2


def test_an_update_at_a_version_we_signed_is_refused() -> None:
    alice, bob = make_pair()
    bob1, _ = pay(bob, 1)
    bob2, _ = transition(bob1, UpdateRejectReceived(ALICE.address, bob.channel_id, 1, "no"))
    assert bob2.signed_up_to == 1
    _, events = pay(alice, 1)
    same, refusal = deliver(bob2, events[1], ALICE, BOB)
    assert same is bob2
    assert refusal[1] == SendUpdateReject(ALICE.address, bob.channel_id, 1,
                                          Reason.VERSION.value + " (signed up to 1)")


# --- the final update ---------------------------------------------------------------------------


def close(alice: Channel, bob: Channel) -> tuple[Channel, Channel]:
    alice, events = transition(alice, OwnUpdate(ALICE, (), True))
    bob, events = deliver(bob, events[1], ALICE, BOB)
    (needs_user,) = events
    assert isinstance(needs_user, UpdateNeedsUser)
    bob, events = transition(bob, RespondUpdate(BOB, needs_user.update_id, True))
    alice, _ = deliver(alice, events[1], BOB, ALICE)
    return alice, bob


def test_final_update_then_conclude_final() -> None:
    alice, bob = make_pair()
    alice1, events = transition(alice, OwnUpdate(ALICE, ((ETH, ETHER),), True))
    final = next_state(alice, balances=((9 * ETHER, 11 * ETHER),), is_final=True)
    bob1, events = deliver(bob, events[1], ALICE, BOB)
    assert events == (
        UpdateNeedsUser(bob.channel_id, signing_digest(final), final, UpdateKind.FINAL),
    )
    bob2, events = transition(bob1, RespondUpdate(BOB, signing_digest(final), True))
    assert bob2.phase is Phase.CLOSING and bob2.current is not None
    sigs = bob2.current.signatures
    assert events == (
        Persist(bob2),
        SendUpdateAccept(ALICE.address, bob.channel_id, 1, sigs[1]),
        NewState(bob.channel_id, final, Source.PEER),
        ConcludeFinal(bob.channel_id, bob.params, final, sigs, False),
    )
    alice2, events = deliver(alice1, events[1], BOB, ALICE)
    assert alice2.phase is Phase.CLOSING and alice2.current == bob2.current
    assert events == (
        Persist(alice2, by_us=True),
        NewState(alice.channel_id, final, Source.OWN),
        ConcludeFinal(alice.channel_id, alice.params, final, sigs, True),
    )


def test_a_refused_close_becomes_a_dispute() -> None:
    alice, _ = make_pair()
    assert alice.current is not None
    alice1, _ = transition(alice, OwnUpdate(ALICE, (), True))
    alice2, events = transition(
        alice1, UpdateRejectReceived(BOB.address, alice.channel_id, 1, "rejected by the user")
    )
    assert alice2.phase is Phase.CLOSING and alice2.staged is None
    assert events == (
        Persist(alice2),
        UpdateFailed(alice.channel_id, 1, UpdateFailure.REJECTED, "rejected by the user"),
        Register(alice.channel_id, alice.params, alice.current.state, alice.current.signatures),
    )


@pytest.mark.parametrize("reason", [Reason.COLLISION.value,
                                    Reason.VERSION.value + " (signed up to 7)"])
def test_a_close_that_collided_is_proposed_again_not_disputed(reason: str) -> None:
    """Both sides proposed at once, or the peer had signed higher: a higher version cures it
    and the send queue retries the final update as any other. It used to go on-chain at once
    (the virtual-channel review's finding)."""
    alice, _ = make_pair()
    alice1, _ = transition(alice, OwnUpdate(ALICE, (), True))
    alice2, events = transition(alice1, UpdateRejectReceived(BOB.address, alice.channel_id, 1,
                                                             reason))
    assert alice2.phase is Phase.OPEN and alice2.staged is None
    assert [type(e) for e in events] == [UpdateFailed]
    alice3, events = transition(alice2, OwnUpdate(ALICE, (), True))
    assert alice3.staged is not None and alice3.staged.state.is_final
    assert alice3.staged.state.version > (7 if "signed up to" in reason else 1)


def test_an_unanswered_close_is_abandoned_and_synced_the_shell_decides_on_a_dispute() -> None:
    """The peer may hold the final state (it concludes, or its Sync brings it); whether to
    propose it again (its connection came back) or to register is perund.session.closing's."""
    alice, _ = make_pair()
    assert alice.current is not None
    alice1, _ = transition(alice, OwnUpdate(ALICE, (), True))
    alice2, events = transition(alice1, UpdateTimedOut(1))
    assert alice2.phase is Phase.OPEN and alice2.needs_sync
    assert alice2.abandoned == alice1.staged
    cur = alice.current
    assert events == (
        Persist(alice2),
        UpdateFailed(alice.channel_id, 1, UpdateFailure.TIMED_OUT, "no answer from the peer"),
        SendSync(BOB.address, cur.state, cur.signatures),
    )
