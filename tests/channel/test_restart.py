"""A restart under durability by interest (docs/protocol.md): the core resumes above its
version reservation, signs nothing until the peer's Sync, and teaches the peer to propose above
it. The scenarios at the end replay crashes in the two-core model of test_two_cores.py, whose
invariants (no version signed twice, what a user heard of is durable where it matters, nothing
proposed on an old state, both sides agree at the end) are checked at every step."""

from __future__ import annotations

from dataclasses import replace

import pytest

from perund.channel.changes import (
    OwnUpdate,
    Restored,
    StartSync,
    UpdateRejectReceived,
)
from perund.channel.encoding import Signer
from perund.channel.events import (
    Persist,
    Reason,
    Refused,
    SendSync,
    SendUpdate,
    SendUpdateAccept,
    SendUpdateReject,
    UpdateFailed,
    UpdateFailure,
)
from perund.channel.machine import Result, transition
from perund.channel.records import RESERVATION_BLOCK, Channel
from perund.channel.types import ETH, UINT64_MAX, Signature, State
from perund.errors import FailedPrecondition
from tests.channel.factories import ALICE, BOB, deliver, make_pair
from tests.channel.test_two_cores import TwoCores


def pay(channel: Channel, signer: Signer, amount: int = 1) -> Result:
    return transition(channel, OwnUpdate(signer, ((ETH, amount),)))


def test_the_first_signature_reserves_a_block_and_the_next_ones_write_nothing() -> None:
    alice, bob = make_pair()
    alice1, events = pay(alice, ALICE)
    assert alice1.reserved == RESERVATION_BLOCK and events[0] == Persist(alice1)  # waited
    bob1, answer = deliver(bob, events[1], ALICE, BOB)
    # The responder's write is waited for anyway: it carries its reservation.
    assert bob1.reserved == RESERVATION_BLOCK and answer[0] == Persist(bob1)
    alice2, _ = deliver(alice1, answer[1], BOB, ALICE)
    alice3, events = pay(alice2, ALICE)
    # Version 2, within the reservation: noted by the store, not even written.
    assert events[0] == Persist(alice3, wait=False, write=False)


def test_signing_beyond_the_reservation_waits_for_a_new_block() -> None:
    alice, _ = make_pair()
    at_edge = replace(alice, signed_up_to=RESERVATION_BLOCK, reserved=RESERVATION_BLOCK)
    alice1, events = pay(at_edge, ALICE)
    assert alice1.staged is not None and alice1.staged.state.version == RESERVATION_BLOCK + 1
    assert alice1.reserved == 2 * RESERVATION_BLOCK and events[0] == Persist(alice1)


def test_a_restart_resumes_above_the_reservation_and_signs_nothing_before_the_sync() -> None:
    alice, bob = make_pair()
    alice1, events = pay(alice, ALICE)
    bob1, answer = deliver(bob, events[1], ALICE, BOB)
    alice2, _ = deliver(alice1, answer[1], BOB, ALICE)
    # alice restarts from a record that lost version 1 (written without waiting).
    lost = replace(alice1, staged=None, phase=alice.phase)
    restarted, events = transition(lost, Restored())
    assert events == ()
    assert restarted.signed_up_to == RESERVATION_BLOCK and restarted.resyncing
    with pytest.raises(FailedPrecondition, match="restarted: waiting for the peer's sync"):
        pay(restarted, ALICE)
    # Bob's update is refused until his Sync came: it may build on a state alice lost.
    _, events = pay(bob1, BOB)
    same, refusal = deliver(restarted, events[1], BOB, ALICE)
    assert same is restarted and refusal[0] == Refused(
        bob.channel_id, BOB.address, Reason.SYNC_PENDING, "version 2")
    # On the new connection bob's Sync brings version 1 back; that ends the wait.
    _, syncs = transition(bob1, StartSync())
    resynced, events = deliver(restarted, syncs[-1], BOB, ALICE)
    assert resynced.current == bob1.current == alice2.current
    assert not resynced.resyncing and not resynced.needs_sync
    assert resynced.signed_up_to == RESERVATION_BLOCK


def test_any_sync_ends_the_wait_even_an_older_one() -> None:
    """A peer behind us (it lost payments of its own) resyncs us as well: ours is newest."""
    alice, bob = make_pair()
    _, events = pay(alice, ALICE)
    bob1, _ = deliver(bob, events[1], ALICE, BOB)
    restarted, _ = transition(bob1, Restored())
    _, syncs = transition(alice, StartSync())
    resynced, events = deliver(restarted, syncs[-1], ALICE, BOB)
    assert not resynced.resyncing and resynced.current == bob1.current
    assert events == (SendSync(ALICE.address, *_signed(bob1)),)


def _signed(channel: Channel) -> tuple[State, tuple[Signature, Signature]]:
    assert channel.current is not None
    return channel.current.state, channel.current.signatures


def test_a_version_reject_names_the_version_to_propose_above() -> None:
    alice, bob = make_pair()
    restarted, _ = transition(bob, Restored())
    resynced, _ = deliver(restarted, transition(alice, StartSync())[1][-1], ALICE, BOB)
    assert resynced.signed_up_to == 0  # bob never signed beyond version 0
    bumped = replace(resynced, signed_up_to=1500)
    alice1, events = pay(alice, ALICE)
    _, refusal = deliver(bumped, events[1], ALICE, BOB)
    reason = Reason.VERSION.value + " (signed up to 1500)"
    assert refusal == (Refused(bob.channel_id, ALICE.address, Reason.VERSION, "version 1"),
                       SendUpdateReject(ALICE.address, bob.channel_id, 1, reason))
    alice2, failed = deliver(alice1, refusal[1], BOB, ALICE)
    # The proposer's user sees the plain reason (the send queue retries a VERSION refusal).
    assert failed == (UpdateFailed(alice.channel_id, 1, UpdateFailure.REJECTED,
                                   Reason.VERSION.value),)
    assert alice2.signed_up_to == 1500
    alice3, events = pay(alice2, ALICE)
    assert isinstance(events[1], SendUpdate) and events[1].state.version == 1501
    assert alice3.reserved == 1501 + RESERVATION_BLOCK - 1 and events[0] == Persist(alice3)
    _, answer = deliver(bumped, events[1], ALICE, BOB)
    assert isinstance(answer[1], SendUpdateAccept) and answer[1].version == 1501


@pytest.mark.parametrize(("reason", "told"), [
    # A VERSION refusal whose version is beyond uint64: still one, without the hint.
    (Reason.VERSION.value + " (signed up to 99999999999999999999)", Reason.VERSION.value),
    (Reason.VERSION.value + " (signed up to -5)", None),
    (Reason.VERSION.value + " (signed up to 1e9)", None),
    (Reason.VERSION.value + " (signed up to \u0663)", None),  # a digit, not an ASCII one
    ("no thanks (signed up to 9)", None),
])
def test_a_reject_naming_no_usable_version_changes_nothing_else(reason: str,
                                                                 told: str | None) -> None:
    alice, _ = make_pair()
    alice1, _ = pay(alice, ALICE)
    alice2, events = transition(alice1, UpdateRejectReceived(
        alice.peer, alice.channel_id, 1, reason))
    assert alice2.signed_up_to == 1
    assert isinstance(events[0], UpdateFailed) and events[0].reason == (told or reason)


def test_a_claimed_version_implausibly_far_ahead_is_not_believed() -> None:
    """A peer claiming to have signed up to 2^64 - 1 would leave us no version to propose,
    not even the final state of a cooperative close."""
    alice, _ = make_pair()
    alice1, _ = pay(alice, ALICE)
    claim = Reason.VERSION.value + f" (signed up to {UINT64_MAX})"
    alice2, events = transition(alice1, UpdateRejectReceived(alice.peer, alice.channel_id, 1,
                                                             claim))
    assert alice2.signed_up_to == 1
    assert isinstance(events[0], UpdateFailed)
    assert events[0].reason == (f"{Reason.VERSION.value} (the peer claims version {UINT64_MAX}, "
                                "implausibly far ahead)")
    _, events = pay(alice2, ALICE)
    assert isinstance(events[1], SendUpdate) and events[1].state.version == 2
    # Right at the bound it is believed (a peer that restarted often, say).
    believed, _ = transition(alice1, UpdateRejectReceived(
        alice.peer, alice.channel_id, 1, f"{Reason.VERSION.value} (signed up to {1 + 2**32})"))
    assert believed.signed_up_to == 1 + 2**32


def test_a_reject_never_lowers_what_we_signed() -> None:
    alice, _ = make_pair()
    alice1, _ = pay(replace(alice, signed_up_to=40, reserved=1000), ALICE)
    alice2, _ = transition(alice1, UpdateRejectReceived(
        alice.peer, alice.channel_id, 41, Reason.VERSION.value + " (signed up to 7)"))
    assert alice2.signed_up_to == 41


# --- crash scenarios in the two-core model --------------------------------------------------


def _model() -> TwoCores:
    model = TwoCores()
    model.funded()
    return model


def test_the_payer_loses_the_payment_its_user_heard_of_and_gets_it_back() -> None:
    model = _model()
    model.pay(1, ETH, 5)  # bob pays alice: alice accepts at once
    model.drain()
    assert model.told == [1, 1]
    # bob lost version 1 (his writes were not waited for) and restarts from version 0.
    model.restart(1, 0, 0, False)
    assert model.channels[1].current is not None
    assert model.channels[1].current.state.version == 0 and model.channels[1].resyncing
    model.pay(1, ETH, 3)  # refused by his own core: no payment on a state he may lack
    assert model.channels[1].staged is None
    model.drain()  # alice's Sync brings version 1 back
    assert model.channels[1].current == model.channels[0].current
    model.pay(1, ETH, 3)
    model.drain()
    model.teardown()


def test_a_lost_staged_update_is_never_signed_again() -> None:
    model = _model()
    model.pay(1, ETH, 5)
    model.drain()
    model.pay(1, ETH, 7)  # version 2 leaves bob, but never arrives
    model.restart(1, 0, 0, False)
    assert model.channels[1].signed_up_to >= 2
    model.drain()
    model.pay(1, ETH, 9)  # another amount: signed at a new version, checked by the model
    model.drain()
    model.teardown()


def test_the_payer_dies_after_its_update_reached_the_payee() -> None:
    model = _model()
    model.pay(1, ETH, 5)
    model.restart(1, 0, 0, True)  # the Update was delivered; the accept died with bob
    assert model.channels[0].current is not None
    assert model.channels[0].current.state.version == 1  # alice holds it
    model.drain()
    assert model.channels[1].current == model.channels[0].current
    model.teardown()


def test_the_payee_dies_before_and_after_answering() -> None:
    model = _model()
    model.pay(1, ETH, 5)
    model.deliver_one(0)  # alice countersigned: durable at her before the accept left
    model.restart(0, 0, 0, False)
    model.drain()
    assert model.channels[1].current == model.channels[0].current
    assert model.channels[0].current is not None
    assert model.channels[0].current.state.version == 1
    model.pay(1, ETH, 1)  # alice resumed above her reservation: bob learns to go above it
    model.drain()
    model.pay(1, ETH, 1)
    model.drain()
    model.teardown()


def test_a_request_is_durable_at_the_requester_before_its_user_hears() -> None:
    model = _model()
    model.pay(0, ETH, -4)  # alice requests 4 from bob, whose user accepts
    model.drain()
    model.answer(1, True, False)
    model.drain()
    assert model.told[0] == 1
    model.restart(0, 0, 0, False)  # whatever alice kept, her request's state is in it
    assert model.channels[0].current is not None
    assert model.channels[0].current.state.version == 1
    model.teardown()


def test_both_die_at_once() -> None:
    model = _model()
    model.pay(1, ETH, 5)
    model.drain()
    model.pay(1, ETH, 6)
    model.deliver_one(0)
    model.restart(1, 0, 0, False)
    model.restart(0, 0, 0, False)
    model.drain()
    model.teardown()
