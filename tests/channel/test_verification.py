"""Verification by interest (docs/protocol.md): a payer does not check the payee's
countersignature on a payment, and falls back to the latest checked state wherever the chain
needs one. The attacker here is a payee that countersigns with garbage."""

from __future__ import annotations

import pytest

from perund.channel.changes import (
    ForceClose,
    OwnUpdate,
    Registered,
    RespondUpdate,
    Restored,
    SyncReceived,
    UpdateAcceptReceived,
)
from perund.channel.events import (
    Conclude,
    Disputed,
    NewState,
    Persist,
    Reason,
    Refused,
    Register,
    SendSync,
    SendUpdate,
    SendUpdateAccept,
    Source,
    UpdateNeedsUser,
)
from perund.channel.machine import transition
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.steps import provable
from perund.channel.types import ETH, Signature
from perund.storage.codec import decode_channel, encode_channel
from tests.channel.factories import ALICE, BOB, ETHER, MALLORY, deliver, make_pair


def propose(alice: Channel, amount: int, final: bool = False) -> tuple[Channel, SendUpdate]:
    """Alice's update moving `amount` to Bob (negative: a request)."""
    alice, events = transition(alice, OwnUpdate(ALICE, ((ETH, amount),), final))
    update = events[-1]
    assert isinstance(update, SendUpdate)
    return alice, update


def countersigned(alice: Channel, bob: Channel, amount: int, *, forged: bool,
                  final: bool = False) -> tuple[Channel, Channel, tuple]:
    """Alice proposes, Bob countersigns (honestly) and Alice receives Bob's signature, or, when
    `forged`, a signature by someone else on the same digest (valid-looking bytes)."""
    alice, update = propose(alice, amount, final)
    bob, answer = deliver(bob, update, ALICE, BOB)
    if isinstance(answer[0], UpdateNeedsUser):  # a request or a close: Bob's user agrees
        bob, answer = transition(bob, RespondUpdate(BOB, answer[0].update_id, True))
    accept = answer[1]
    assert isinstance(accept, SendUpdateAccept)
    assert alice.staged is not None
    signature = MALLORY.sign_digest(alice.staged.digest) if forged else accept.signature
    alice, events = transition(alice, UpdateAcceptReceived(
        BOB.address, alice.channel_id, accept.version, Signature(signature)))
    return alice, bob, events


def test_a_payment_is_taken_unchecked_and_the_checked_state_is_kept() -> None:
    alice, bob = make_pair()
    start = alice.current
    paid, bob, events = countersigned(alice, bob, ETHER, forged=True)
    assert paid.staged is None and paid.phase is Phase.OPEN
    assert paid.current is not None and paid.current.state.balances == ((9 * ETHER, 11 * ETHER),)
    assert paid.checked == start
    # Our user hears at once, as for any payment: nothing about the signature is known yet.
    assert events == (Persist(paid, False, by_us=True),
                      NewState(alice.channel_id, paid.current.state, Source.OWN))
    # Further payments keep the oldest checked state: the fallback for all of them.
    again, bob, _ = countersigned(paid, bob, ETHER, forged=False)
    assert again.checked == start
    assert provable(again) == again.current  # the honest signature verifies when asked


@pytest.mark.parametrize("amount, final", [(-ETHER, False), (0, True)],
                         ids=["request", "final"])
def test_a_state_that_benefits_us_is_checked_at_once(amount: int, final: bool) -> None:
    alice, bob = make_pair()
    staged, bob, events = countersigned(alice, bob, amount, forged=True, final=final)
    assert staged.staged is not None and staged.checked is None
    assert staged.current == alice.current
    version = staged.staged.state.version
    assert events == (Refused(alice.channel_id, BOB.address, Reason.SIGNATURE,
                              f"version {version}"),)


def test_a_checked_state_ends_the_fallback() -> None:
    alice, bob = make_pair()
    paid, bob, _ = countersigned(alice, bob, ETHER, forged=True)
    requested, bob, _ = countersigned(paid, bob, -ETHER // 2, forged=False)
    assert requested.checked is None
    # The peer's own update, countersigned by us after checking its signature, too.
    paid, bob, _ = countersigned(requested, bob, ETHER, forged=True)
    assert paid.checked is not None
    bob, events = transition(bob, OwnUpdate(BOB, ((ETH, 1),)))
    update = events[-1]
    assert isinstance(update, SendUpdate)
    received, _ = deliver(paid, update, BOB, ALICE)
    assert received.current is not None and received.current.state.version > \
        paid.latest.version and received.checked is None


def test_a_dispute_registers_the_checked_state_when_the_countersignature_is_bad() -> None:
    alice, bob = make_pair()
    start = alice.current
    assert start is not None
    paid, bob, _ = countersigned(alice, bob, ETHER, forged=True)
    paid, bob, _ = countersigned(paid, bob, ETHER, forged=False)
    forged, bob, _ = countersigned(paid, bob, ETHER, forged=True)
    assert forged.checked == start
    assert provable(forged) == start
    closing, events = transition(forged, ForceClose())
    assert closing.phase is Phase.CLOSING
    # It names our latest version, 3, for the operator's log.
    assert events[-1] == Register(alice.channel_id, alice.params, start.state, start.signatures,
                                  3)


def test_a_dispute_registers_the_unchecked_state_when_it_verifies() -> None:
    alice, bob = make_pair()
    paid, bob, _ = countersigned(alice, bob, ETHER, forged=False)
    assert paid.checked is not None and paid.current == bob.current
    _, events = transition(paid, ForceClose())
    current = paid.current
    assert current is not None
    assert events[-1] == Register(alice.channel_id, alice.params, current.state,
                                  current.signatures)


def registered(version: int) -> Registered:
    """The chain's event for Bob's registration of `version` (its balances do not matter)."""
    return Registered(version, 99, False, ((0, 20 * ETHER),))


def test_an_old_registration_is_refuted_with_the_checked_state() -> None:
    # After a checked request, Bob takes three payments with garbage, then registers version 0.
    alice, bob = make_pair()
    paid, bob, _ = countersigned(alice, bob, -ETHER, forged=False)
    checked = paid.current
    assert checked is not None
    for _ in range(3):
        paid, bob, _ = countersigned(paid, bob, ETHER, forged=True)
    disputed, events = transition(paid, registered(0))
    assert disputed.phase is Phase.DISPUTED
    assert events[-1] == Register(alice.channel_id, alice.params, checked.state,
                                  checked.signatures, 4)


def test_a_registration_after_the_checked_state_stands_when_ours_does_not_verify() -> None:
    # Bob registers a state Alice signed after `checked`: it pays her at least what her
    # unprovable `current` does, and the chain would refuse `checked` as older.
    alice, bob = make_pair()
    paid, bob, _ = countersigned(alice, bob, ETHER, forged=True)
    middle = paid.current
    assert middle is not None
    paid, bob, _ = countersigned(paid, bob, ETHER, forged=True)
    disputed, events = transition(paid, registered(middle.state.version))
    assert events[-1] == Disputed(alice.channel_id, middle.state.version, 99)
    assert not any(isinstance(e, Register | Conclude) for e in events)
    # And after a restart, nothing is registered either.
    _, events = transition(disputed, Restored())
    assert not any(isinstance(e, Register) for e in events)


def test_a_registration_after_the_checked_state_is_refuted_when_ours_verifies() -> None:
    alice, bob = make_pair()
    paid, bob, _ = countersigned(alice, bob, ETHER, forged=True)
    middle = paid.current
    assert middle is not None
    paid, bob, _ = countersigned(paid, bob, ETHER, forged=False)
    _, events = transition(paid, registered(middle.state.version))
    current = paid.current
    assert current is not None
    assert events[-1] == Register(alice.channel_id, alice.params, current.state,
                                  current.signatures)


def test_the_checked_state_survives_the_store_and_a_restart() -> None:
    alice, bob = make_pair()
    paid, bob, _ = countersigned(alice, bob, ETHER, forged=True)
    stored = decode_channel(encode_channel(paid))
    assert stored == paid
    restored, _ = transition(stored, Restored())
    assert restored.checked == paid.checked
    _, events = transition(restored, ForceClose())
    start = alice.current
    assert start is not None
    assert events[-1] == Register(alice.channel_id, alice.params, start.state, start.signatures,
                                  1)


def test_the_payee_checks_every_payment() -> None:
    # Bob is the payee: Alice's signature on her update is always checked (it benefits him).
    alice, bob = make_pair()
    alice, update = propose(alice, ETHER)
    assert alice.staged is not None
    forged = SendUpdate(update.peer, update.state,
                        Signature(MALLORY.sign_digest(alice.staged.digest)))
    same, events = deliver(bob, forged, ALICE, BOB)
    assert same.current == bob.current and same.checked is None
    assert isinstance(events[0], Refused) and events[0].reason is Reason.SIGNATURE


# -- a sync checks what was left unchecked ------------------------------------------------------


def sync_from(bob: Channel) -> SyncReceived:
    """Bob's Sync of the state he holds."""
    assert bob.current is not None
    return SyncReceived(BOB.address, bob.current.state, bob.current.signatures)


def unwaited_write(event: object, channel: Channel) -> bool:
    """Whether `event` writes `channel` without waiting."""
    return isinstance(event, Persist) and not event.wait and event.channel == channel


def test_an_honest_sync_checks_the_countersignature_and_clears_the_fallback() -> None:
    alice, bob = make_pair()
    paid, bob, _ = countersigned(alice, bob, ETHER, forged=False)
    assert paid.checked is not None
    synced, events = transition(paid, sync_from(bob))
    assert synced.current == paid.current and synced.checked is None
    assert unwaited_write(events[0], synced)
    # A Sync that crossed the payment (older than it) checks it as well.
    stale = SyncReceived(BOB.address, alice.latest, sync_from(bob).signatures)
    synced, events = transition(paid, stale)
    assert synced.checked is None and unwaited_write(events[0], synced)


def test_a_sync_of_the_same_state_mends_a_false_countersignature() -> None:
    # Bob holds the payment (his client countersigned it) but sent Alice garbage.
    alice, bob = make_pair()
    paid, bob, _ = countersigned(alice, bob, ETHER, forged=True)
    synced, events = transition(paid, sync_from(bob))
    assert synced.current == bob.current and synced.checked is None
    assert isinstance(events[0], Refused) and events[0].reason is Reason.SIGNATURE
    assert "countersigned falsely" in events[0].detail
    assert unwaited_write(events[1], synced)
    assert not any(isinstance(e, NewState) for e in events)


def test_a_sync_showing_the_checked_state_takes_us_back_to_it() -> None:
    # Bob never countersigned the payment: his Sync shows the state before it. Alice goes back
    # to it (it pays her more), tells her user, drops Bob's update built on the false state,
    # and sends her Sync again (her last one carried the false state, which Bob refuses).
    alice, bob = make_pair()
    start = alice.current
    assert start is not None
    paid, _, _ = countersigned(alice, bob, ETHER, forged=True)
    paid = paid.evolve(sync_sent=True)
    synced, events = transition(paid, sync_from(bob))
    assert synced.current == start and synced.checked is None
    refused, persist, new_state, reply = events
    assert isinstance(refused, Refused) and refused.reason is Reason.SIGNATURE
    assert persist == Persist(synced)
    assert new_state == NewState(alice.channel_id, start.state, Source.SYNC)
    assert reply == SendSync(BOB.address, start.state, start.signatures, 0)


def test_a_sync_showing_a_later_state_of_ours_takes_us_back_to_that_one() -> None:
    alice, bob = make_pair()
    one, bob, _ = countersigned(alice, bob, ETHER, forged=True)    # Bob holds it
    two, _, _ = countersigned(one, bob, ETHER, forged=True)        # Bob never signed it
    assert two.checked == alice.current
    synced, events = transition(two, sync_from(bob))
    assert synced.current == bob.current and synced.checked is None
    assert NewState(alice.channel_id, bob.latest, Source.SYNC) in events


def test_a_sync_that_proves_nothing_leaves_the_unchecked_state() -> None:
    # Older than `checked` (a replay, or a peer that fell behind), or a forged one: going back
    # could drop payments the peer holds. Alice keeps her state and answers with the one the
    # chain takes, which the peer can adopt.
    alice, bob = make_pair()
    requested, bob, _ = countersigned(alice, bob, -ETHER, forged=False)
    checked = requested.current
    assert checked is not None
    paid, _, _ = countersigned(requested, bob, ETHER, forged=True)
    replay = SyncReceived(BOB.address, alice.latest, alice.current.signatures)  # type: ignore[union-attr]
    kept, events = transition(paid, replay)
    assert kept.current == paid.current and kept.checked == checked
    assert events == (SendSync(BOB.address, checked.state, checked.signatures, 0),)
    forged = SyncReceived(BOB.address, paid.latest,
                          (paid.current.signatures[0], Signature(MALLORY.sign_state(paid.latest))))  # type: ignore[union-attr]
    kept, events = transition(paid.evolve(sync_sent=True), forged)
    assert kept.current == paid.current and kept.checked == checked
    assert not any(isinstance(e, Persist | NewState) for e in events)
