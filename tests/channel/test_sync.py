"""Sync: reconciling with the peer's latest fully signed state."""

from __future__ import annotations

from dataclasses import replace

import pytest

from perund.channel.changes import (
    Concluded,
    OwnUpdate,
    Relinked,
    Restored,
    StartSync,
    SyncReceived,
    UpdateAcceptReceived,
    UpdateReceived,
    UpdateRejectReceived,
    UpdateTimedOut,
)
from perund.channel.encoding import signing_digest
from perund.channel.events import (
    ConcludeFinal,
    Conflict,
    NewState,
    Persist,
    Reason,
    Refused,
    Register,
    SendChannelClosed,
    SendSync,
    SendUpdateReject,
    Source,
    UpdateFailed,
    UpdateFailure,
    UpdateNeedsUser,
    UpdateWithdrawn,
)
from perund.channel.machine import transition
from perund.channel.phases import Phase
from perund.channel.records import Channel, SignedState
from perund.channel.syncing import CLOSED_HERE, OVERTAKEN
from perund.channel.types import ChannelID, Signature, State, SubAlloc
from perund.errors import FailedPrecondition
from tests.channel.factories import (
    ALICE,
    BOB,
    ETHER,
    MALLORY,
    TOKEN,
    deliver,
    fully_signed_by_both,
    make_pair,
    next_state,
    sign,
)


def sync_from_alice(bob: Channel, state: State, sigs: tuple[Signature, Signature] | None = None):
    return transition(bob, SyncReceived(ALICE.address, state, sigs or fully_signed_by_both(state)))


def cur(channel: Channel) -> SignedState:
    assert channel.current is not None
    return channel.current


def test_start_sync_sends_our_latest_state() -> None:
    alice, _ = make_pair()
    alice1, events = transition(alice, StartSync())
    assert alice1.sync_sent and alice1 == replace(alice, sync_sent=True)
    assert events == (SendSync(BOB.address, cur(alice).state, cur(alice).signatures),)
    # Every (re)connection sends again.
    assert transition(alice1, StartSync()) == (alice1, events)


def test_equal_state_is_answered_once() -> None:
    alice, bob = make_pair()
    bob1, events = sync_from_alice(bob, cur(bob).state, cur(bob).signatures)
    assert bob1 == replace(bob, sync_sent=True)
    assert events == (SendSync(ALICE.address, cur(bob).state, cur(bob).signatures),)
    # Alice sent hers first (StartSync), so Bob's answer is not answered again.
    alice1, _ = transition(alice, StartSync())
    alice2, events = deliver(alice1, events[0], BOB, ALICE)
    assert events == () and alice2 == alice1


def test_an_equal_sync_on_the_same_connection_does_not_resolve_a_timed_out_update() -> None:
    """It may have left the peer before our update arrived there."""
    alice, bob = make_pair()
    alice1, _ = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 5),)))
    alice2, _ = transition(alice1, UpdateTimedOut(1))
    alice3, events = transition(
        alice2, SyncReceived(BOB.address, cur(bob).state, cur(bob).signatures)
    )
    assert alice3.needs_sync and alice3.abandoned == alice1.staged
    assert events == ()


def test_after_a_relink_the_peers_next_sync_is_answered_though_we_sent_ours() -> None:
    """The peer's dial replaced ours: it may have restarted behind our connection, and its
    Sync (its channel `resyncing`) waits for ours."""
    alice, bob = make_pair()
    alice1, _ = transition(alice, StartSync())
    bob_restarted, _ = transition(bob, Restored())
    _, bob_syncs = transition(bob_restarted, StartSync())
    # Without the relink, alice answered already: the restarted bob would wait for good.
    assert deliver(alice1, bob_syncs[-1], BOB, ALICE)[1] == ()
    alice2, events = transition(alice1, Relinked())
    assert events == () and alice2 == replace(alice1, sync_sent=False)
    alice3, events = deliver(alice2, bob_syncs[-1], BOB, ALICE)
    assert events == (SendSync(BOB.address, cur(alice).state, cur(alice).signatures),)
    assert alice3 == replace(alice2, sync_sent=True)
    bob_resynced, _ = deliver(bob_restarted, events[0], ALICE, BOB)
    assert not bob_resynced.resyncing
    # Once answered, a relink with nothing to resolve changes nothing more than the flag.
    assert transition(alice3, Relinked()) == (alice2, ())
    assert transition(alice2, Relinked()) == (alice2, ())


def test_a_relink_lets_the_peers_sync_resolve_an_update_abandoned_before_it() -> None:
    alice, bob = make_pair()
    alice1, _ = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 5),)))
    alice2, _ = transition(alice1, UpdateTimedOut(1))
    alice3, events = transition(alice2, Relinked())
    assert events == () and alice3.fresh_link and alice3.abandoned == alice2.abandoned
    alice4, events = transition(
        alice3, SyncReceived(BOB.address, cur(bob).state, cur(bob).signatures)
    )
    assert not alice4.needs_sync and alice4.current == alice.current
    assert events == (Persist(alice4),
                      SendSync(BOB.address, cur(alice).state, cur(alice).signatures))


def test_a_relink_gives_up_nothing_in_flight() -> None:
    """When the two dials merely crossed, the answers come on the new connection."""
    alice, bob = make_pair()
    alice1, events = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 5),)))
    alice2, relinked = transition(alice1, Relinked())
    assert relinked == () and alice2.staged == alice1.staged and not alice2.fresh_link
    bob1, answer = deliver(bob, events[1], ALICE, BOB)
    alice3, _ = deliver(alice2, answer[1], BOB, ALICE)
    assert alice3.current == bob1.current and alice3.staged is None


def test_equal_version_different_state_is_a_conflict_and_a_dispute() -> None:
    _, bob = make_pair()
    ours = cur(bob).state
    theirs = replace(ours, balances=((ours.balances[0][0] - 1, ours.balances[0][1] + 1),))
    bob1, events = sync_from_alice(bob, theirs)
    assert bob1.phase is Phase.CLOSING
    assert events == (
        Conflict(bob.channel_id, ours, theirs),
        Persist(bob1),
        Register(bob.channel_id, bob.params, ours, cur(bob).signatures),
    )


def test_equal_version_different_state_without_valid_signatures_is_refused() -> None:
    _, bob = make_pair()
    ours = cur(bob).state
    theirs = replace(ours, balances=((0, 20 * ETHER),))
    forged = (sign(ALICE, theirs), sign(MALLORY, theirs))
    bob1, events = sync_from_alice(bob, theirs, forged)
    assert bob1 is bob
    assert events == (Refused(bob.channel_id, ALICE.address, Reason.SIGNATURE, "version 0"),)


def test_higher_fully_signed_state_is_adopted() -> None:
    _, bob = make_pair()
    higher = next_state(bob, version=7, balances=((4 * ETHER, 16 * ETHER),))
    sigs = fully_signed_by_both(higher)
    bob1, events = sync_from_alice(bob, higher, sigs)
    assert bob1.current == SignedState(higher, sigs) and bob1.phase is Phase.OPEN
    assert events == (
        Persist(bob1, by_us=True),
        NewState(bob.channel_id, higher, Source.SYNC),
        SendSync(ALICE.address, higher, sigs),
    )


def test_higher_state_with_one_bad_signature_is_refused() -> None:
    _, bob = make_pair()
    higher = next_state(bob, balances=((0, 20 * ETHER),))
    for sigs in (
        (sign(ALICE, higher), sign(MALLORY, higher)),
        (sign(BOB, higher), sign(BOB, higher)),
        (sign(ALICE, higher), Signature(b"\x00" * 65)),
    ):
        bob1, events = sync_from_alice(bob, higher, sigs)
        assert bob1 is bob
        assert events == (Refused(bob.channel_id, ALICE.address, Reason.SIGNATURE, "version 1"),)


def test_higher_state_that_inflates_the_totals_is_refused_even_if_signed() -> None:
    _, bob = make_pair()
    inflated = next_state(bob, balances=((10 * ETHER, 30 * ETHER),))
    bob1, events = sync_from_alice(bob, inflated)
    assert bob1 is bob
    assert events == (Refused(bob.channel_id, ALICE.address, Reason.TOTALS, "version 1"),)


def test_higher_state_with_other_assets_is_refused() -> None:
    _, bob = make_pair()
    other = next_state(bob, assets=(TOKEN,))
    bob1, events = sync_from_alice(bob, other)
    assert bob1 is bob
    assert events == (Refused(bob.channel_id, ALICE.address, Reason.ASSETS, "version 1"),)


def test_higher_state_whose_locks_add_funds_is_refused_even_if_signed() -> None:
    # A lock on top of unchanged free balances would promise more than the channel holds.
    _, bob = make_pair()
    locked = next_state(bob, locked=(SubAlloc(ChannelID(b"\x5a" * 32), (ETHER,), (0, 1)),))
    bob1, events = sync_from_alice(bob, locked)
    assert bob1 is bob
    assert events == (Refused(bob.channel_id, ALICE.address, Reason.TOTALS, "version 1"),)


def test_higher_state_whose_lock_keeps_the_funds_is_adopted_when_both_signed() -> None:
    # Both signed it: our signature on a lock means we made or matched it (a lock whose
    # answer we missed arrives this way).
    _, bob = make_pair()
    row = bob.latest.balances[0]
    lock = SubAlloc(ChannelID(b"\x5a" * 32), (ETHER,), (0, 1))
    locked = next_state(bob, balances=((row[0] - ETHER, row[1]),), locked=(lock,))
    bob1, events = sync_from_alice(bob, locked)
    assert bob1.current is not None and bob1.current.state == locked
    assert NewState(bob.channel_id, locked, Source.SYNC) in events


def test_state_of_another_channel_is_refused() -> None:
    _, bob = make_pair()
    other = next_state(bob, channel_id=ChannelID(b"\x77" * 32))
    bob1, events = sync_from_alice(bob, other)
    assert bob1 is bob
    assert events == (Refused(bob.channel_id, ALICE.address, Reason.WRONG_CHANNEL),)


def test_sync_from_a_stranger_is_refused() -> None:
    _, bob = make_pair()
    state = cur(bob).state
    bob1, events = transition(bob, SyncReceived(MALLORY.address, state, cur(bob).signatures))
    assert bob1 is bob
    assert events == (Refused(bob.channel_id, MALLORY.address, Reason.NOT_PEER),)


def test_lower_version_from_the_peer_gets_ours() -> None:
    alice, bob = make_pair()
    old = cur(bob)
    alice, events = transition(alice, OwnUpdate(ALICE, ((next(iter(cur(alice).state.assets)), 1),)))
    bob, events = deliver(bob, events[1], ALICE, BOB)
    bob1, events = sync_from_alice(bob, old.state, old.signatures)
    assert bob1.current == bob.current and bob1.sync_sent
    assert events == (SendSync(ALICE.address, cur(bob).state, cur(bob).signatures),)
    # Once ours is on its way, a second old Sync is not answered again.
    assert sync_from_alice(bob1, old.state, old.signatures) == (bob1, ())


def test_our_update_in_flight_completes_when_the_peer_syncs_it_fully_signed() -> None:
    alice, bob = make_pair()
    alice1, events = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 5),)))
    bob1, _ = deliver(bob, events[1], ALICE, BOB)
    # The UpdateAccept is lost, Bob's Sync arrives instead.
    alice2, events = transition(
        alice1, SyncReceived(BOB.address, cur(bob1).state, cur(bob1).signatures)
    )
    assert alice2.current == bob1.current and alice2.staged is None
    assert alice2.phase is Phase.OPEN
    assert events == (
        Persist(alice2, by_us=True),
        NewState(alice.channel_id, cur(bob1).state, Source.OWN),
        SendSync(BOB.address, cur(bob1).state, cur(bob1).signatures),
    )


def test_after_a_timeout_the_peers_sync_brings_the_update_it_accepted() -> None:
    alice, bob = make_pair()
    alice1, events = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 5),)))
    bob1, _ = deliver(bob, events[1], ALICE, BOB)
    alice2, events = transition(alice1, UpdateTimedOut(1))
    assert alice2.needs_sync
    # Bob answers Alice's Sync with his newer state.
    bob2, answer = deliver(bob1, events[2], ALICE, BOB)
    assert answer == (SendSync(ALICE.address, cur(bob1).state, cur(bob1).signatures),)
    alice3, events = deliver(alice2, answer[0], BOB, ALICE)
    assert alice3.current == bob2.current and not alice3.needs_sync
    assert events == (Persist(alice3, by_us=True),
                      NewState(alice.channel_id, cur(bob1).state, Source.SYNC))


def test_after_a_lost_connection_the_peers_sync_resolves_the_update() -> None:
    alice, bob = make_pair()
    alice1, _ = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 5),)))
    # The Update is lost with the connection; the new one starts with a sync on both sides.
    alice2, events = transition(alice1, StartSync())
    assert alice2.needs_sync and alice2.fresh_link and alice2.staged is None
    assert events == (
        Persist(alice2),
        UpdateFailed(alice.channel_id, 1, UpdateFailure.TIMED_OUT, "connection lost"),
        SendSync(BOB.address, cur(alice).state, cur(alice).signatures),
    )
    _, bob_events = transition(bob, StartSync())
    alice3, events = deliver(alice2, bob_events[0], BOB, ALICE)
    assert not alice3.needs_sync and alice3.current == alice.current
    assert events == (Persist(alice3),)
    transition(alice3, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 5),)))  # allowed again
    # The failed request's timer firing late changes nothing.
    assert transition(alice3, UpdateTimedOut(1)) == (alice3, ())


def test_a_late_reject_resolves_the_timed_out_update() -> None:
    alice, _ = make_pair()
    alice1, _ = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 5),)))
    alice2, _ = transition(alice1, UpdateTimedOut(1))
    alice3, events = transition(
        alice2, UpdateRejectReceived(BOB.address, alice.channel_id, 1, "no")
    )
    assert not alice3.needs_sync and alice3.current == alice.current
    assert events == (Persist(alice3),)


def test_a_late_accept_completes_the_timed_out_update() -> None:
    alice, bob = make_pair()
    alice1, events = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 5),)))
    bob1, answer = deliver(bob, events[1], ALICE, BOB)
    alice2, _ = transition(alice1, UpdateTimedOut(1))
    alice3, events = deliver(alice2, answer[1], BOB, ALICE)
    assert not alice3.needs_sync and alice3.current == bob1.current
    # A payment of ours: the payee holds it, nothing waits for our write.
    assert events == (Persist(alice3, False, by_us=True),
                      NewState(alice.channel_id, cur(bob1).state, Source.SYNC))


def test_while_unresolved_we_countersign_nothing_of_that_version() -> None:
    alice, bob = make_pair()
    alice1, _ = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 5),)))
    alice2, _ = transition(alice1, UpdateTimedOut(1))
    _, events = transition(bob, OwnUpdate(BOB, ((cur(bob).state.assets[0], 1),)))
    alice3, events = deliver(alice2, events[1], BOB, ALICE)
    assert alice3 is alice2
    assert events == (
        Refused(alice.channel_id, BOB.address, Reason.SYNC_PENDING, "version 1"),
        SendUpdateReject(BOB.address, alice.channel_id, 1, Reason.SYNC_PENDING.value),
    )


def test_the_peers_sync_withdraws_its_update_awaiting_our_user() -> None:
    alice, bob = make_pair()
    alice1, events = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], -5),)))
    bob1, asked = deliver(bob, events[1], ALICE, BOB)
    (question,) = asked
    assert isinstance(question, UpdateNeedsUser)
    # Alice's connection dropped: her update failed, she reconnects and syncs.
    alice2, _ = transition(alice1, UpdateTimedOut(1))
    _, events = transition(alice2, StartSync())
    bob2, events = deliver(bob1, events[0], ALICE, BOB)
    assert bob2.staged is None and bob2.phase is Phase.OPEN
    assert events == (
        UpdateWithdrawn(bob.channel_id, question.update_id, "the peer synced"),
        SendUpdateReject(ALICE.address, bob.channel_id, 1, "the peer synced"),
        # Asking bob's user and withdrawing cost alice nothing: it counts against her.
        Refused(bob.channel_id, ALICE.address, Reason.WITHDRAWN, "version 1"),
        SendSync(ALICE.address, cur(bob).state, cur(bob).signatures),
    )


def test_a_newer_state_supersedes_our_own_different_update() -> None:
    alice, _ = make_pair()
    alice1, _ = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 5),)))
    theirs = next_state(alice, balances=((10 * ETHER - 7, 10 * ETHER + 7),))
    sigs = fully_signed_by_both(theirs)
    alice2, events = transition(alice1, SyncReceived(BOB.address, theirs, sigs))
    assert alice2.current == SignedState(theirs, sigs) and alice2.phase is Phase.OPEN
    assert events == (
        Persist(alice2, by_us=True),
        UpdateFailed(alice.channel_id, 1, UpdateFailure.SUPERSEDED, "the peer holds a newer state"),
        NewState(alice.channel_id, theirs, Source.SYNC),
        SendSync(BOB.address, theirs, sigs),
    )


def test_our_update_above_the_peers_newer_state_stays_open_and_may_still_complete() -> None:
    """The peer syncs a state that is newer than our current one but older than our update in
    flight (its Sync crossed our Update). The peer holds our signature on that update and may
    still countersign it: it becomes abandoned, its fate unknown (the user hears "may or may
    not", not "did not complete"), and the peer's accept completes it. Found by the hostile
    campaign (tests/session/test_hostile_campaign.py), where the old drop told bob a payment
    failed that the peer then completed."""
    alice, _ = make_pair()
    ahead = alice.evolve(signed_up_to=cur(alice).state.version + 1)  # a refused update before
    alice1, sent = transition(ahead, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 5),)))
    ours = sent[1].state
    assert ours.version == cur(alice).state.version + 2
    theirs = next_state(alice, balances=((10 * ETHER - 7, 10 * ETHER + 7),))
    sigs = fully_signed_by_both(theirs)
    alice2, events = transition(alice1, SyncReceived(BOB.address, theirs, sigs))
    assert alice2.current == SignedState(theirs, sigs) and alice2.phase is Phase.OPEN
    assert alice2.abandoned is not None and alice2.abandoned.state == ours
    assert alice2.needs_sync and alice2.staged is None
    assert events == (
        Persist(alice2, by_us=True),
        UpdateFailed(alice.channel_id, ours.version, UpdateFailure.TIMED_OUT, OVERTAKEN),
        NewState(alice.channel_id, theirs, Source.SYNC),
        SendSync(BOB.address, theirs, sigs),
    )
    # Nothing of ours goes out meanwhile, and the peer's countersignature completes it.
    with pytest.raises(FailedPrecondition, match="earlier update timed out"):
        transition(alice2, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 1),)))
    alice3, events = transition(alice2, UpdateAcceptReceived(
        BOB.address, alice.channel_id, ours.version, sign(BOB, ours)))
    assert cur(alice3).state == ours and not alice3.needs_sync
    assert NewState(alice.channel_id, ours, Source.SYNC) in events


def test_our_final_update_above_the_peers_newer_state_is_superseded_without_a_dispute() -> None:
    """A final update of ours overtaken by the peer's Sync is dropped as before, not kept open:
    an unanswered final update would take the channel on-chain, while the close can simply be
    proposed again on the newer state."""
    alice, _ = make_pair()
    ahead = alice.evolve(signed_up_to=cur(alice).state.version + 1)
    alice1, _ = transition(ahead, OwnUpdate(ALICE, (), is_final=True))
    theirs = next_state(alice, balances=((10 * ETHER - 7, 10 * ETHER + 7),))
    sigs = fully_signed_by_both(theirs)
    alice2, events = transition(alice1, SyncReceived(BOB.address, theirs, sigs))
    assert alice2.abandoned is None and alice2.phase is Phase.OPEN
    assert cur(alice2).state == theirs
    assert not any(isinstance(e, Register) for e in events)
    assert UpdateFailed(alice.channel_id, theirs.version + 1, UpdateFailure.SUPERSEDED,
                        "the peer holds a newer state") in events


def test_our_final_update_the_peer_refused_for_its_newer_state_is_no_dispute() -> None:
    """The peer took a newer state from our Sync while our final update waited for its answer,
    and refused the final update for it (`Reason.NEWER_STATE`): like a version refusal, the
    close is proposed again higher, not taken on-chain (the virtual campaign's seed 1317)."""
    alice, _ = make_pair()
    alice1, _ = transition(alice, OwnUpdate(ALICE, (), is_final=True))
    assert alice1.staged is not None
    alice2, events = transition(alice1, UpdateRejectReceived(
        BOB.address, alice.channel_id, alice1.staged.state.version, Reason.NEWER_STATE.value))
    assert alice2.phase is Phase.OPEN and alice2.staged is None
    assert not any(isinstance(e, Register) for e in events)
    assert UpdateFailed(alice.channel_id, alice1.staged.state.version, UpdateFailure.REJECTED,
                        Reason.NEWER_STATE.value) in events


def test_a_fresh_links_sync_resolves_an_update_abandoned_before_though_it_is_above() -> None:
    """An update abandoned on the old connection is resolved by the peer's Sync on the new one,
    even when the state it brings is older: the peer sent it knowing all it got before."""
    alice, _ = make_pair()
    ahead = alice.evolve(signed_up_to=cur(alice).state.version + 1)
    alice1, _ = transition(ahead, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 5),)))
    alice2, _ = transition(alice1, StartSync())  # the connection was lost with it
    assert alice2.abandoned is not None and alice2.fresh_link
    theirs = next_state(alice, balances=((10 * ETHER - 7, 10 * ETHER + 7),))
    alice3, _ = transition(alice2, SyncReceived(BOB.address, theirs, fully_signed_by_both(theirs)))
    assert cur(alice3).state == theirs and alice3.abandoned is None and not alice3.needs_sync


def test_adopting_a_final_state_closes_cooperatively() -> None:
    _, bob = make_pair()
    final = next_state(bob, is_final=True)
    sigs = fully_signed_by_both(final)
    bob1, events = sync_from_alice(bob, final, sigs)
    assert bob1.phase is Phase.CLOSING
    assert events == (
        Persist(bob1, by_us=True),
        NewState(bob.channel_id, final, Source.SYNC),
        ConcludeFinal(bob.channel_id, bob.params, final, sigs, False),
        SendSync(ALICE.address, final, sigs),
    )
    # Nothing succeeds a final state.
    later = next_state(bob1, is_final=False)
    bob2, events = sync_from_alice(bob1, later)
    assert bob2 is bob1
    assert events == (Refused(bob.channel_id, ALICE.address, Reason.FINAL, "version 2"),)


def test_a_closed_channel_answers_syncs_that_it_is_closed() -> None:
    """A peer that syncs a channel we hold closed takes it for live: it is told, and settles
    it on-chain (docs/protocol.md, "A channel closed without the chain"). Nothing changes here,
    a closed channel starts no sync, and a stranger's Sync is refused as before."""
    _, bob = make_pair()
    closed, _ = transition(bob, Concluded(0))
    higher = next_state(bob)
    assert sync_from_alice(closed, higher) == (
        closed, (SendChannelClosed(ALICE.address, bob.channel_id, CLOSED_HERE),))
    assert transition(closed, StartSync()) == (closed, ())
    stranger = SyncReceived(BOB.address, higher, (Signature(b"\x00" * 65),) * 2)
    assert transition(closed, stranger) == (
        closed, (Refused(bob.channel_id, BOB.address, Reason.NOT_PEER, ""),))


def test_sync_exchange_always_ends() -> None:
    """Whatever both sides start with, answering syncs stops after a few messages."""
    alice, bob = make_pair()
    # Bob is one version ahead; both start a sync at once, twice.
    alice, events = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 1),)))
    bob, _ = transition(
        bob, UpdateReceived(ALICE.address, events[1].state, events[1].signature, BOB)
    )  # type: ignore[union-attr]
    alice, _ = transition(alice, UpdateTimedOut(1))
    to_bob: list = []
    to_alice: list = []
    for _ in range(2):
        alice, ev = transition(alice, StartSync())
        to_bob.extend(ev)
        bob, ev = transition(bob, StartSync())
        to_alice.extend(ev)
    messages = 0
    while to_bob or to_alice:
        messages += 1
        assert messages < 20, "sync ping-pong"
        if to_bob:
            bob, ev = deliver(bob, to_bob.pop(0), ALICE, BOB)
            to_alice.extend(e for e in ev if isinstance(e, SendSync))
        if to_alice:
            alice, ev = deliver(alice, to_alice.pop(0), BOB, ALICE)
            to_bob.extend(e for e in ev if isinstance(e, SendSync))
    assert alice.current == bob.current and not alice.needs_sync


def test_signing_digest_is_the_update_id() -> None:
    """The update id is bound to the state's content, so an answer cannot hit another state."""
    _, bob = make_pair()
    request = next_state(bob, balances=((11 * ETHER, 9 * ETHER),))
    _, events = transition(bob, UpdateReceived(ALICE.address, request, sign(ALICE, request), BOB))
    (question,) = events
    assert isinstance(question, UpdateNeedsUser)
    assert question.update_id == signing_digest(request)
