"""On-chain inputs (registered, challenge over, concluded), forced closes, restarts, and the phase
table."""

from __future__ import annotations

from dataclasses import replace

import pytest

from perund.channel.changes import (
    ChainLost,
    ChallengeExpired,
    Concluded,
    ConclusionLost,
    ForceClose,
    Funded,
    FundingExpired,
    OwnUpdate,
    Payout,
    Registered,
    Reorganised,
    RespondUpdate,
    Restored,
    UpdateReceived,
)
from perund.channel.events import (
    Closed,
    Conclude,
    ConcludeFinal,
    Disputed,
    Fund,
    FundingFailed,
    Lost,
    Persist,
    Register,
    SendChannelClosed,
    SendUpdateReject,
    UpdateFailed,
    UpdateFailure,
    UpdateNeedsUser,
    UpdateWithdrawn,
)
from perund.channel.lifecycle import VERSION_ZERO_LAPSED
from perund.channel.machine import transition
from perund.channel.phases import TERMINAL, Phase, advance, allowed, successors
from perund.channel.records import Channel, SignedState
from perund.channel.types import ETH, Address
from perund.errors import FailedPrecondition
from tests.channel.factories import (
    ALICE,
    BOB,
    ETHER,
    deliver,
    make_pair,
    next_state,
    sign,
)


def cur(channel: Channel) -> SignedState:
    assert channel.current is not None
    return channel.current


def advanced(alice: Channel, bob: Channel, n: int) -> tuple[Channel, Channel]:
    for _ in range(n):
        alice, events = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 1),)))
        bob, events = deliver(bob, events[1], ALICE, BOB)
        alice, _ = deliver(alice, events[1], BOB, ALICE)
    return alice, bob


def registered(channel: Channel, version: int, timeout: int = 5000, final: bool = False):
    state = cur(channel).state
    return Registered(version, timeout, final, state.balances)


def test_an_old_registration_is_refuted_with_our_newer_state() -> None:
    alice, bob = make_pair()
    old = cur(bob).state
    alice, bob = advanced(alice, bob, 3)
    bob1, events = transition(bob, Registered(0, 5000, False, old.balances))
    assert bob1.phase is Phase.DISPUTED
    assert bob1.dispute is not None and bob1.dispute.state == old
    assert events == (
        Persist(bob1),
        Disputed(bob.channel_id, 0, 5000),
        Register(bob.channel_id, bob.params, cur(bob).state, cur(bob).signatures),
    )
    # Our refutation shows up: same version as ours, nothing more to do.
    bob2, events = transition(bob1, registered(bob, 3))
    assert bob2.dispute is not None and bob2.dispute.version == 3
    assert events == (Persist(bob2), Disputed(bob.channel_id, 3, 5000))
    # A replay of the older event does not move the dispute back.
    assert transition(bob2, Registered(0, 5000, False, old.balances)) == (bob2, ())
    # Nor is the same registration news again (a replay, or the chain's record read back
    # after a registration of ours found it there): no second `disputed` push.
    assert transition(bob2, registered(bob, 3)) == (bob2, ())
    # The stale registration told again while it stands: only our refutation goes again.
    assert transition(bob1, Registered(0, 5000, False, old.balances)) == (
        bob1, (Register(bob.channel_id, bob.params, cur(bob).state, cur(bob).signatures),))
    bob3, events = transition(bob2, ChallengeExpired())
    assert bob3 is bob2
    assert events == (Conclude(bob.channel_id, bob.params, cur(bob).state),)
    bob4, events = transition(bob3, Concluded(3))
    assert bob4.phase is Phase.CLOSED
    assert events == (Persist(bob4), Closed(bob.channel_id, 3))
    assert transition(bob4, Concluded(3)) == (bob4, ())
    assert transition(bob4, registered(bob, 3)) == (bob4, ())


def test_a_reorganisation_forgets_the_dispute_and_registers_ours_again() -> None:
    alice, bob = make_pair()
    old = cur(bob).state
    alice, bob = advanced(alice, bob, 3)
    bob1, _ = transition(bob, Registered(0, 5000, False, old.balances))
    bob2, _ = transition(bob1, registered(bob, 3))  # our refutation, as the chain had it
    # A reorganisation drops the block with our refutation.
    bob3, events = transition(bob2, Reorganised())
    assert bob3.phase is Phase.DISPUTED and bob3.dispute is None
    ours = Register(bob.channel_id, bob.params, cur(bob).state, cur(bob).signatures)
    assert events == (Persist(bob3), ours)
    # A restart before the chain said anything more registers again (the chain refuses a
    # registration it has; ChainSettlement does not even send it).
    assert ours in transition(bob3, Restored())[1]
    # The new blocks hold only the peer's stale registration: it is refuted again.
    bob4, events = transition(bob3, Registered(0, 5000, False, old.balances))
    assert bob4.dispute is not None and bob4.dispute.version == 0
    assert events == (Persist(bob4), Disputed(bob.channel_id, 0, 5000), ours)
    # Outside a dispute there is nothing the chain could have taken back.
    assert transition(bob, Reorganised()) == (bob, ())


def test_a_reorganisation_concludes_a_final_state_again() -> None:
    """Both sides see the reorganisation: participant 0 concludes at once, the other waits
    (both at once would make one pay for a revert)."""
    alice, bob = make_pair()
    final = next_state(bob, version=1, is_final=True)
    signed = SignedState(final, (sign(ALICE, final), sign(BOB, final)))
    for channel, primary in ((alice, True), (bob, False)):
        channel = replace(channel, current=signed)
        registered_, _ = transition(channel, Registered(1, 5000, True, final.balances))
        after, events = transition(registered_, Reorganised())
        assert after.dispute is None
        assert events == (Persist(after), ConcludeFinal(channel.channel_id, channel.params,
                                                        final, signed.signatures, primary))


def test_a_registered_final_state_is_concluded_at_once() -> None:
    _, bob = make_pair()
    final = next_state(bob, is_final=True)
    bob1, events = transition(bob, Registered(1, 5000, True, final.balances))
    assert events == (
        Persist(bob1),
        Disputed(bob.channel_id, 1, 5000),
        Conclude(bob.channel_id, bob.params, final),
    )


def test_registration_drops_the_update_in_flight() -> None:
    alice, _ = make_pair()
    alice1, _ = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 1),)))
    alice2, events = transition(alice1, registered(alice, 0))
    assert alice2.staged is None and alice2.phase is Phase.DISPUTED
    assert events == (
        Persist(alice2),
        UpdateFailed(alice.channel_id, 1, UpdateFailure.SETTLING, "registered on-chain"),
        Disputed(alice.channel_id, 0, 5000),
    )


def test_challenge_expiry_outside_a_dispute_does_nothing() -> None:
    alice, _ = make_pair()
    assert transition(alice, ChallengeExpired()) == (alice, ())


def test_force_close_registers_our_latest_state() -> None:
    alice, bob = make_pair()
    alice, bob = advanced(alice, bob, 2)
    alice1, events = transition(alice, ForceClose())
    assert alice1.phase is Phase.CLOSING
    assert events == (
        Persist(alice1),
        Register(alice.channel_id, alice.params, cur(alice).state, cur(alice).signatures),
    )
    with pytest.raises(FailedPrecondition):
        transition(alice1, ForceClose())


def test_a_channel_settling_before_it_was_funded_is_unfunded_for_good() -> None:
    """The start-up check must not expect the deposits of a channel that went to settlement
    before it was funded: every way there from funding marks it `unfunded`, the way from open
    does not, and the mark stays through the dispute and the conclusion."""
    funding, _ = make_pair(funded=False)
    opened, _ = make_pair()
    for change in (FundingExpired(), ForceClose(), registered(funding, 0)):
        settled, _ = transition(funding, change)
        assert settled.phase in (Phase.CLOSING, Phase.DISPUTED) and settled.unfunded, change
        disputed, _ = transition(settled, registered(settled, 0))
        assert disputed.phase is Phase.DISPUTED and disputed.unfunded
        closed, _ = transition(disputed, Concluded(0))
        assert closed.phase is Phase.CLOSED and closed.unfunded
    for change in (ForceClose(), registered(opened, 0)):
        settled, _ = transition(opened, change)
        assert settled.phase in (Phase.CLOSING, Phase.DISPUTED) and not settled.unfunded
    assert not make_pair(funded=False)[0].unfunded


def test_force_close_answers_the_peers_pending_update() -> None:
    _, bob = make_pair()
    request = next_state(bob, balances=((11 * ETHER, 9 * ETHER),))
    bob1, (question,) = transition(
        bob, UpdateReceived(ALICE.address, request, sign(ALICE, request), BOB)
    )
    assert isinstance(question, UpdateNeedsUser)
    bob2, events = transition(bob1, ForceClose())
    assert bob2.phase is Phase.CLOSING and bob2.staged is None
    assert events == (
        Persist(bob2),
        UpdateWithdrawn(bob.channel_id, question.update_id, "the channel is being closed"),
        SendUpdateReject(ALICE.address, bob.channel_id, 1, "the channel is being closed"),
        Register(bob.channel_id, bob.params, cur(bob).state, cur(bob).signatures),
    )


def test_restart_while_our_update_was_in_flight_needs_a_sync() -> None:
    alice, _ = make_pair()
    alice1, _ = transition(alice, OwnUpdate(ALICE, ((cur(alice).state.assets[0], 1),)))
    alice1 = replace(alice1, sync_sent=True)
    alice2, events = transition(alice1, Restored())
    assert alice2.phase is Phase.OPEN and alice2.staged is None
    assert alice2.needs_sync and not alice2.sync_sent
    assert events == (
        Persist(alice2),
        UpdateFailed(alice.channel_id, 1, UpdateFailure.RESTART, "the node restarted"),
    )


def test_a_payment_taken_while_funding_is_not_deposited_again_after_a_restart() -> None:
    """bob takes alice's payment while his side still waits for the deposits (hers saw them
    first): a restart then tops his deposit up to version 0's share, not to the share the
    payment gave him (an audit: he deposited the payment again, and the contract's surplus
    went to alice)."""
    alice, bob = make_pair(funded=False)
    version_0 = cur(bob).state
    alice, _ = transition(alice, Funded())
    alice, events = transition(alice, OwnUpdate(ALICE, ((version_0.assets[0], 10),)))
    bob, _ = deliver(bob, events[1], ALICE, BOB)
    assert bob.phase is Phase.FUNDING and cur(bob).state.version == 1
    assert bob.funding == version_0.balances
    paid = cur(bob).state.balances
    assert paid != version_0.balances
    restarted, events = transition(bob, Restored())
    assert events == (Fund(bob.channel_id, bob.params, 1, version_0.assets,
                           version_0.balances),)
    opened, _ = transition(restarted, Funded())
    assert opened.funding is None and cur(opened).state.balances == paid
    assert transition(opened, Restored())[1] == ()


def test_restart_while_funding_deposits_again() -> None:
    alice, _ = make_pair(funded=False)
    alice1, events = transition(alice, Restored())
    state = cur(alice).state
    assert alice1 == replace(alice, resyncing=True)  # no update until the peer's Sync
    assert events == (Fund(alice.channel_id, alice.params, 0, state.assets, state.balances),)
    opened, _ = transition(alice1, Funded())
    assert transition(opened, Restored()) == (opened, ())


def test_restart_while_closing_concludes_again() -> None:
    alice, bob = make_pair()
    _, events = transition(alice, OwnUpdate(ALICE, (), True))
    bob1, (question,) = deliver(bob, events[1], ALICE, BOB)
    assert isinstance(question, UpdateNeedsUser)
    bob2, _ = transition(bob1, RespondUpdate(BOB, question.update_id, True))
    _, events = transition(bob2, Restored())
    final = cur(bob2)
    assert events == (
        ConcludeFinal(bob.channel_id, bob.params, final.state, final.signatures, False),
    )


def test_restart_while_disputed_refutes_again_when_ours_is_newer() -> None:
    """The refutation may not have left before the restart; an equal registration needs
    nothing (the watcher reports the end of the challenge)."""
    alice, bob = make_pair()
    old = cur(bob).state
    alice, bob = advanced(alice, bob, 2)
    bob1, _ = transition(bob, Registered(0, 5000, False, old.balances))
    _, events = transition(bob1, Restored())
    assert events == (Register(bob.channel_id, bob.params, cur(bob).state, cur(bob).signatures),)
    bob2, _ = transition(bob1, registered(bob1, 2))
    # Nothing to do; versions resume above the reservation (a settling channel never resyncs).
    assert transition(bob2, Restored()) == (replace(bob2, signed_up_to=bob2.reserved), ())


def test_phase_table() -> None:
    assert successors(Phase.CLOSED) == frozenset() == successors(Phase.CHAIN_LOST)
    for phase in Phase:
        assert allowed(phase, phase)
        if phase not in TERMINAL:
            assert Phase.CLOSED in successors(phase)
            assert Phase.CHAIN_LOST in successors(phase)
    assert not allowed(Phase.OPEN, Phase.FUNDING)
    assert not allowed(Phase.CLOSING, Phase.OPEN)
    with pytest.raises(AssertionError):
        advance(Phase.CLOSED, Phase.OPEN)
    # Every phase can be reached from proposing.
    seen, todo = {Phase.PROPOSING}, [Phase.PROPOSING]
    while todo:
        for nxt in successors(todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(Phase)


def test_funding_expiry_answers_the_peers_pending_update() -> None:
    _, bob = make_pair(funded=False)
    request = next_state(bob, balances=((11 * ETHER, 9 * ETHER),))
    bob1, (question,) = transition(
        bob, UpdateReceived(ALICE.address, request, sign(ALICE, request), BOB)
    )
    assert isinstance(question, UpdateNeedsUser) and bob1.phase is Phase.FUNDING
    bob2, events = transition(bob1, FundingExpired())
    assert bob2.phase is Phase.CLOSING and bob2.staged is None
    assert events == (
        Persist(bob2),
        UpdateWithdrawn(bob.channel_id, question.update_id, "the channel was not funded"),
        SendUpdateReject(ALICE.address, bob.channel_id, 1, "the channel was not funded"),
        FundingFailed(bob.channel_id),
        Register(bob.channel_id, bob.params, cur(bob).state, cur(bob).signatures),
    )


def test_a_conclusion_reports_what_the_chain_paid_our_receiver() -> None:
    alice, bob = make_pair()
    ours, theirs = bob.params.receivers[bob.index], bob.params.receivers[alice.index]
    payouts = (Payout(theirs, ETH, 7 * ETHER, True), Payout(ours, ETH, 3 * ETHER, False))
    _, events = transition(bob, Concluded(0, payouts))
    # A credited payout counts as paid, and is named as held for a withdraw.
    assert events[-1] == Closed(bob.channel_id, 0, ((ETH, 3 * ETHER),), ((ETH, 3 * ETHER),))
    _, events = transition(alice, Concluded(0, payouts))
    assert events[-1] == Closed(alice.channel_id, 0, ((ETH, 7 * ETHER),))
    token = Address(b"\x70" * 20)
    payouts = (Payout(ours, ETH, 2, True), Payout(ours, token, 5, False),
               Payout(theirs, token, 9, False))
    _, events = transition(bob, Concluded(0, payouts))
    assert events[-1] == Closed(bob.channel_id, 0, ((ETH, 2), (token, 5)), ((token, 5),))
    _, events = transition(bob, Concluded(0, ()))  # the chain paid us nothing: said so
    assert events[-1] == Closed(bob.channel_id, 0, ())
    _, events = transition(bob, Concluded(0))  # learnt without its events: not known
    assert events[-1] == Closed(bob.channel_id, 0, None)


def test_a_channel_the_chain_lost_is_given_up_for_good() -> None:
    _, bob = make_pair()
    lost, events = transition(bob, ChainLost("2.5 ETH expected, 0 ETH held"))
    assert lost.phase is Phase.CHAIN_LOST
    assert events == (Persist(lost), Lost(bob.channel_id, "2.5 ETH expected, 0 ETH held"))
    for later in (Restored(), ChainLost("again"), Concluded(0),
                  Registered(1, 5000, False, cur(bob).state.balances)):
        assert transition(lost, later)[0].phase is Phase.CHAIN_LOST
    with pytest.raises(FailedPrecondition):  # nothing to close
        transition(lost, ForceClose())
    with pytest.raises(FailedPrecondition):
        transition(lost, OwnUpdate(BOB, ((ETH, 1),)))


def test_a_conclusion_the_chain_lost_is_settled_again() -> None:
    """The chain lost the blocks of the conclusion (a dev chain stopped between its state
    saves, a reorganisation deeper than the confirmations): from CLOSED, the one way back."""
    alice, bob = make_pair()
    final = next_state(bob, version=1, is_final=True)
    signed = SignedState(final, (sign(ALICE, final), sign(BOB, final)))
    for ours, primary in ((alice, True), (bob, False)):
        closed, _ = transition(replace(ours, current=signed), Concluded(1))
        assert closed.phase is Phase.CLOSED
        again, events = transition(closed, ConclusionLost())
        assert again.phase is Phase.CLOSING and again.dispute is None
        # Participant 0 concludes at once; the other only after the grace, if still needed.
        assert events == (Persist(again), ConcludeFinal(ours.channel_id, ours.params, final,
                                                        signed.signatures, primary))
    # Closed by a dispute (no final state): registered again, the challenge runs anew.
    disputed, _ = transition(bob, registered(bob, 0))
    closed, _ = transition(disputed, Concluded(0))
    again, events = transition(closed, ConclusionLost())
    assert again.phase is Phase.CLOSING and again.dispute is None
    assert events == (Persist(again), Register(bob.channel_id, bob.params, cur(bob).state,
                                               cur(bob).signatures))
    # Only a closed channel: anything else is left as it is.
    assert transition(bob, ConclusionLost()) == (bob, ())


def test_a_proposal_whose_version_zero_lapsed_closes_unfunded() -> None:
    """bob accepted; alice's signature on version 0 never came: nothing is deposited before
    it does, so his channel closes, unfunded. Past proposing the input changes nothing."""
    from perund.channel.changes import VersionZeroLapsed
    from perund.channel.events import FundingFailed
    from perund.channel.proposal import accept_proposal
    from tests.channel.factories import BOB_RECEIVER, DEPLOYMENT, make_proposal_from

    bob, _ = accept_proposal(make_proposal_from(), signer=BOB, receiver=BOB_RECEIVER,
                             nonce_share=b"\x03" * 32, deployment=DEPLOYMENT)
    assert bob.phase is Phase.PROPOSING
    closed, events = transition(bob, VersionZeroLapsed())
    assert closed == replace(bob, phase=Phase.CLOSED, unfunded=True)
    assert events == (Persist(closed), FundingFailed(bob.channel_id),
                      SendChannelClosed(ALICE.address, bob.channel_id, VERSION_ZERO_LAPSED),
                      Closed(bob.channel_id, bob.version, off_chain=VERSION_ZERO_LAPSED))
    _, funding = make_pair(funded=False)
    assert transition(funding, VersionZeroLapsed()) == (funding, ())


def test_a_payment_taken_while_funding_is_registered_when_funding_expires() -> None:
    """bob deposits nothing (version 0 gives him nothing), and alice pays him while his side
    still waits: at the funding deadline his state holds money of his, so it is registered,
    not closed at once (a regression an audit found: he closed, stopped watching, and would
    not have refuted alice's version 0)."""
    from perund.channel.proposal import OpenRequest
    from perund.channel.types import ETH
    from tests.channel.factories import BOB

    alice, bob = make_pair(OpenRequest(BOB.address, (ETH,), ((10 * ETHER, 0),), 60),
                           funded=False)
    alice, _ = transition(alice, Funded())
    alice, events = transition(alice, OwnUpdate(ALICE, ((ETH, ETHER),)))
    bob, _ = deliver(bob, events[1], ALICE, BOB)
    assert bob.funding == ((10 * ETHER, 0),)
    expired, events = transition(bob, FundingExpired())
    assert expired.phase is Phase.CLOSING and expired.unfunded
    assert any(isinstance(e, Register) and e.state.version == 1 for e in events)
