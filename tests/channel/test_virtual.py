"""Virtual channels in the core: opening, locks, the intermediary's checks, folds, refusals.

Every test asserts on the whole list of events (docs/conventions.md, "Pure core")."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perund.channel.changes import (
    ChallengeExpired,
    Funded,
    LockFailed,
    MatchFailed,
    OwnUpdate,
    Registered,
    RespondUpdate,
    UpdateAcceptReceived,
    UpdateReceived,
)
from perund.channel.encoding import signing_digest, virtual_channel_id
from perund.channel.events import (
    AwaitingMatch,
    Closed,
    Conclude,
    Disputed,
    FoldParent,
    FundingFailed,
    LockParent,
    NewState,
    Opened,
    Persist,
    ProposalReceived,
    ProposalRefused,
    Reason,
    Refused,
    SendReject,
    SendUpdate,
    SendUpdateAccept,
    SendUpdateReject,
    Source,
)
from perund.channel.machine import transition
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.rules import funds
from perund.channel.types import (
    ETH,
    Address,
    ChannelID,
    State,
    SubAlloc,
    VirtualParams,
    VirtualProof,
)
from perund.channel.virtual import folded_state, is_virtual, locked_state, proof_of
from perund.channel.virtual_opening import (
    VirtualOpenRequest,
    accept_virtual_proposal,
    receive_virtual_proposal,
)
from perund.errors import FailedPrecondition, InvalidArgument

from .factories import deliver, sign
from .virtual_factories import (
    ALICE,
    CAROL,
    DEPLOYMENT,
    ETHER,
    INGRID,
    TOKEN,
    Hub,
    make_hub,
    open_ledger,
)


def lock(channel: Channel, proof: VirtualProof, signer=ALICE) -> tuple[Channel, tuple]:  # type: ignore[no-untyped-def]
    return transition(channel, OwnUpdate(signer, (), False, proof))


def test_opening_makes_a_virtual_channel_on_both_sides_and_asks_for_the_locks() -> None:
    hub = make_hub()
    v = hub.v_alice
    vp = v.params
    assert isinstance(vp, VirtualParams)
    assert vp.participants == (ALICE.address, CAROL.address)
    assert vp.parents == (hub.la_alice.channel_id, hub.lc_carol.channel_id)
    assert v.channel_id == virtual_channel_id(DEPLOYMENT.chain_id, DEPLOYMENT.adjudicator, vp)
    assert is_virtual(v) and not is_virtual(hub.la_alice)
    assert v.phase is Phase.FUNDING and hub.v_carol.phase is Phase.FUNDING
    assert v.current == hub.v_carol.current
    assert v.current is not None
    assert v.current.state == State(v.channel_id, 0, (ETH,), ((3 * ETHER, 2 * ETHER),), False)


def test_the_responder_locks_once_version_zero_is_fully_signed() -> None:
    hub = make_hub()
    carol, carol_events = accept_virtual_proposal(
        hub.proposal, signer=CAROL, ledger=hub.lc_carol, nonce_share=b"\x66" * 32,
        deployment=DEPLOYMENT)
    assert carol.phase is Phase.PROPOSING
    assert carol_events == (Persist(carol), carol_events[1])
    assert hub.v_alice.current is not None
    new, events = transition(carol, UpdateAcceptReceived(
        ALICE.address, carol.channel_id, 0, hub.v_alice.current.signatures[0]))
    assert new.phase is Phase.FUNDING and new == hub.v_carol
    assert events == (Persist(new), LockParent(new.channel_id, hub.lc_carol.channel_id,
                                               proof_of(new)))


def test_a_virtual_proposal_without_a_covering_ledger_is_refused() -> None:
    hub = make_hub()
    events = receive_virtual_proposal(hub.proposal, sender=ALICE.address, me=CAROL.address,
                                      peer_known=True, intermediary_known=True,
                                      deployment=DEPLOYMENT, ledger=None)
    assert events == (
        ProposalRefused(ALICE.address, hub.proposal.proposal_id, Reason.NO_LEDGER, ""),
        SendReject(ALICE.address, hub.proposal.proposal_id, Reason.NO_LEDGER.value))
    ok = receive_virtual_proposal(hub.proposal, sender=ALICE.address, me=CAROL.address,
                                  peer_known=True, intermediary_known=True,
                                  deployment=DEPLOYMENT, ledger=hub.lc_carol)
    assert ok == (ProposalReceived(ALICE.address, hub.proposal.proposal_id),)
    for me, known in ((INGRID.address, True), (CAROL.address, False)):
        refused = receive_virtual_proposal(hub.proposal, sender=ALICE.address, me=me,
                                           peer_known=True, intermediary_known=known,
                                           deployment=DEPLOYMENT, ledger=hub.lc_carol)
        assert isinstance(refused[0], ProposalRefused)
        assert refused[0].reason is Reason.INTERMEDIARY


def test_a_proposal_the_ledger_cannot_cover_is_not_made() -> None:
    from perund.channel.virtual_opening import make_virtual_proposal

    hub = make_hub()
    too_much = VirtualOpenRequest(CAROL.address, INGRID.address, (ETH,),
                                  ((11 * ETHER, 0),), 3600)
    with pytest.raises(FailedPrecondition, match="do not cover"):
        make_virtual_proposal(too_much, participant=ALICE.address, ledger=hub.la_alice,
                              proposal_id=b"\x01" * 32, nonce_share=b"\x02" * 32,
                              deployment=DEPLOYMENT)
    via_peer = VirtualOpenRequest(CAROL.address, CAROL.address, (ETH,), ((1, 0),), 3600)
    with pytest.raises(InvalidArgument, match="peer itself"):
        make_virtual_proposal(via_peer, participant=ALICE.address, ledger=hub.la_alice,
                              proposal_id=b"\x01" * 32, nonce_share=b"\x02" * 32,
                              deployment=DEPLOYMENT)


# -- locks --------------------------------------------------------------------------------------


def locked_pair(hub: Hub) -> tuple[Channel, Channel, Channel, Channel]:
    """Both locks sent and countersigned: (L_A alice, L_A ingrid, L_C carol, L_C ingrid)."""
    la_a, sent_a = lock(hub.la_alice, proof_of(hub.v_alice))
    lc_c, sent_c = lock(hub.lc_carol, proof_of(hub.v_carol), CAROL)
    la_i, waits_a = deliver(hub.la_ingrid, sent_a[1], ALICE, INGRID)
    lc_i, waits_c = deliver(hub.lc_ingrid, sent_c[1], CAROL, INGRID)
    la_i, answer_a = transition(la_i, RespondUpdate(INGRID, waits_a[0].update_id, True))  # type: ignore[union-attr]
    lc_i, answer_c = transition(lc_i, RespondUpdate(INGRID, waits_c[0].update_id, True))  # type: ignore[union-attr]
    la_a, _ = deliver(la_a, answer_a[1], INGRID, ALICE)
    lc_c, _ = deliver(lc_c, answer_c[1], INGRID, CAROL)
    return la_a, la_i, lc_c, lc_i


def test_a_lock_moves_both_shares_into_a_sub_allocation() -> None:
    hub = make_hub()
    proof = proof_of(hub.v_alice)
    new, events = lock(hub.la_alice, proof)
    state = State(hub.la_alice.channel_id, 1, (ETH,), ((7 * ETHER, 8 * ETHER),), False,
                  (SubAlloc(hub.v_alice.channel_id, (5 * ETHER,), (0, 1)),))
    assert new.staged is not None and new.staged.state == state
    assert new.phase is Phase.UPDATING
    assert events == (Persist(new), SendUpdate(INGRID.address, state,
                                               new.staged.signature, proof))
    # carol is participant 0 of L_C but 1 of V: ingrid (L_C's 1) stands for alice (V's 0).
    carol, _carol_events = lock(hub.lc_carol, proof_of(hub.v_carol), CAROL)
    assert carol.staged is not None
    assert carol.staged.state.balances == ((8 * ETHER, 7 * ETHER),)
    assert carol.staged.state.locked == (SubAlloc(hub.v_alice.channel_id, (5 * ETHER,), (1, 0)),)


def test_the_intermediary_holds_a_valid_lock_for_its_match_then_countersigns() -> None:
    hub = make_hub()
    _, sent = lock(hub.la_alice, proof_of(hub.v_alice))
    update = sent[1]
    assert isinstance(update, SendUpdate)
    waiting, events = deliver(hub.la_ingrid, update, ALICE, INGRID)
    digest = signing_digest(update.state)
    assert waiting.phase is Phase.UPDATING
    assert waiting.staged is not None and waiting.staged.update_id == digest
    assert events == (AwaitingMatch(hub.la_ingrid.channel_id, digest, proof_of(hub.v_alice)),)
    accepted, answer = transition(waiting, RespondUpdate(INGRID, digest, True))
    assert accepted.current is not None and accepted.current.state == update.state
    assert answer == (Persist(accepted),
                      SendUpdateAccept(ALICE.address, accepted.channel_id, 1,
                                       accepted.current.signatures[1]),
                      NewState(accepted.channel_id, update.state, Source.PEER))


def test_an_unmatched_lock_is_refused_and_never_signed() -> None:
    hub = make_hub()
    _, sent = lock(hub.la_alice, proof_of(hub.v_alice))
    waiting, events = deliver(hub.la_ingrid, sent[1], ALICE, INGRID)
    update_id = events[0].update_id  # type: ignore[union-attr]
    refused, answer = transition(waiting, MatchFailed(update_id))
    assert refused.current == hub.la_ingrid.current and refused.phase is Phase.OPEN
    assert answer == (SendUpdateReject(ALICE.address, refused.channel_id, 1,
                                       Reason.NO_MATCH.value),)
    assert transition(refused, MatchFailed(update_id)) == (refused, ())


def hostile_locks(hub: Hub) -> dict[str, tuple[State, VirtualProof, Reason]]:
    proof = proof_of(hub.v_alice)
    vp = proof.params
    assert isinstance(vp, VirtualParams)
    good = locked_state(hub.la_alice.latest, 1, 0, proof)
    lock_ = good.locked[0]
    v0 = proof.state
    v1 = replace(v0, version=1)
    stranger = replace(vp, parents=(ChannelID(b"\x99" * 32), vp.parents[1]))
    return {
        "more locked than v0 holds": (
            replace(good, balances=((6 * ETHER, 8 * ETHER),),
                    locked=(replace(lock_, balances=(6 * ETHER,)),)), proof, Reason.VIRTUAL),
        "wrong index map": (replace(good, locked=(replace(lock_, index_map=(1, 0)),)), proof,
                            Reason.VIRTUAL),
        "a payment beside the lock": (replace(good, balances=((6 * ETHER, 9 * ETHER),)), proof,
                                      Reason.VIRTUAL),
        "v0 signed by alice only": (good, replace(proof, signatures=(
            proof.signatures[0], proof.signatures[0])), Reason.SIGNATURE),
        "version 1 instead of 0": (good, VirtualProof(vp, v1, (sign(ALICE, v1), sign(CAROL, v1))),
                                   Reason.VIRTUAL),
        "another ledger funds alice": (good, replace(proof, params=stranger), Reason.VIRTUAL),
        "a final state as a lock of v0": (good, replace(proof, state=replace(v0, is_final=True)),
                                          Reason.VIRTUAL),
    }


@pytest.mark.parametrize("case", ["more locked than v0 holds", "wrong index map",
                                  "a payment beside the lock", "v0 signed by alice only",
                                  "version 1 instead of 0", "another ledger funds alice",
                                  "a final state as a lock of v0"])
def test_the_intermediary_refuses_a_lock_that_is_not_exactly_v0s(case: str) -> None:
    hub = make_hub()
    state, proof, reason = hostile_locks(hub)[case]
    signature = sign(ALICE, state)
    new, events = transition(hub.la_ingrid, UpdateReceived(ALICE.address, state, signature,
                                                           INGRID, proof))
    assert new is hub.la_ingrid
    assert events == (Refused(new.channel_id, ALICE.address, reason, "version 1"),
                      SendUpdateReject(ALICE.address, new.channel_id, 1, reason.value))


def test_a_lock_of_a_channel_locked_already_is_refused() -> None:
    hub = make_hub()
    la_a, la_i, _, _ = locked_pair(hub)
    proof = proof_of(hub.v_alice)
    again = replace(la_a.latest, version=3)
    new, events = transition(la_i, UpdateReceived(ALICE.address, again, sign(ALICE, again),
                                                  INGRID, proof))
    assert new is la_i
    assert events[0] == Refused(la_i.channel_id, ALICE.address, Reason.VIRTUAL, "version 3")
    with pytest.raises(FailedPrecondition, match="locked in this ledger already"):
        lock(la_a, proof)


def test_a_plain_update_never_changes_locks_and_a_final_one_never_has_any() -> None:
    hub = make_hub()
    la_a, la_i, _, _ = locked_pair(hub)
    unlocked = State(la_a.channel_id, 5, (ETH,), ((12 * ETHER, 8 * ETHER),), False)
    new, events = transition(la_i, UpdateReceived(ALICE.address, unlocked,
                                                  sign(ALICE, unlocked), INGRID))
    assert new is la_i and events[0] == Refused(la_i.channel_id, ALICE.address, Reason.LOCKED,
                                                "version 5")
    final = replace(la_a.latest, version=5, is_final=True)
    new, events = transition(la_i, UpdateReceived(ALICE.address, final, sign(ALICE, final),
                                                  INGRID))
    assert new is la_i and events[0] == Refused(la_i.channel_id, ALICE.address, Reason.LOCKED,
                                                "version 5")
    with pytest.raises(FailedPrecondition, match="funds virtual channels") as raised:
        transition(la_a, OwnUpdate(ALICE, (), True))
    assert raised.value.data["virtual_channels"] == ["0x" + hub.v_alice.channel_id.hex()]


def test_payments_beside_a_lock_keep_it() -> None:
    hub = make_hub()
    la_a, la_i, _, _ = locked_pair(hub)
    paid, sent = transition(la_a, OwnUpdate(ALICE, ((ETH, ETHER),)))
    assert paid.staged is not None
    assert paid.staged.state.locked == la_a.latest.locked
    assert paid.staged.state.balances == ((6 * ETHER, 9 * ETHER),)
    _, events = deliver(la_i, sent[1], ALICE, INGRID)
    assert isinstance(events[1], SendUpdateAccept)


def test_the_virtual_channel_opens_when_its_parent_lock_is_signed() -> None:
    hub = make_hub()
    la_a, _, _, _ = locked_pair(hub)
    assert la_a.current is not None and la_a.current.state.locked
    opened, events = transition(hub.v_alice, Funded())
    assert opened.phase is Phase.OPEN
    assert events == (Persist(opened), Opened(opened.channel_id))


def test_a_virtual_channel_whose_lock_failed_closes() -> None:
    hub = make_hub()
    closed, events = transition(hub.v_alice, LockFailed("refused"))
    assert closed.phase is Phase.CLOSED
    assert events == (Persist(closed), FundingFailed(closed.channel_id),
                      Closed(closed.channel_id, 0,
                             off_chain="the lock in our ledger channel failed: refused"))
    assert transition(hub.la_alice, LockFailed("x")) == (hub.la_alice, ())


def test_a_virtual_channel_takes_no_payment_before_our_lock_is_signed() -> None:
    """carol's lock is signed, alice's not yet (or never: a hub that holds it back): carol's
    payment to alice is refused, since nothing in alice's ledger backs it (an audit: alice
    took 0.6 ETH there, the hub never signed her lock, and kept it). Once alice's lock is
    signed, the same payment goes through."""
    hub = make_hub()
    carol, _ = transition(hub.v_carol, Funded())
    carol, sent = transition(carol, OwnUpdate(CAROL, ((ETH, ETHER),)))
    [update] = [e for e in sent if isinstance(e, SendUpdate)]
    refused, events = deliver(hub.v_alice, update, CAROL, ALICE)
    assert refused == hub.v_alice and refused.phase is Phase.FUNDING
    assert [e for e in events if isinstance(e, SendUpdateReject)] == [
        SendUpdateReject(CAROL.address, update.state.channel_id, update.state.version,
                         Reason.NOT_OPEN.value)]
    alice, _ = transition(hub.v_alice, Funded())
    taken, events = deliver(alice, update, CAROL, ALICE)
    assert taken.current is not None and taken.current.state == update.state


# -- payments, the final state and the fold ------------------------------------------------------


def open_virtual(hub: Hub) -> tuple[Channel, Channel]:
    alice, _ = transition(hub.v_alice, Funded())
    carol, _ = transition(hub.v_carol, Funded())
    return alice, carol


def test_a_final_virtual_state_folds_into_the_parents_not_on_chain() -> None:
    hub = make_hub()
    alice, carol = open_virtual(hub)
    alice, sent = transition(alice, OwnUpdate(ALICE, ((ETH, ETHER),)))
    carol, answer = deliver(carol, sent[1], ALICE, CAROL)
    alice, _ = deliver(alice, answer[1], CAROL, ALICE)
    alice, sent = transition(alice, OwnUpdate(ALICE, (), True))
    carol, asked = deliver(carol, sent[1], ALICE, CAROL)
    carol, answer = transition(carol, RespondUpdate(CAROL, asked[0].update_id, True))  # type: ignore[union-attr]
    final = State(alice.channel_id, 2, (ETH,), ((2 * ETHER, 3 * ETHER),), True)
    assert carol.phase is Phase.CLOSING
    assert answer == (Persist(carol), answer[1], NewState(carol.channel_id, final, Source.PEER),
                      FoldParent(carol.channel_id, hub.lc_carol.channel_id, proof_of(carol)))
    alice, events = deliver(alice, answer[1], CAROL, ALICE)
    assert events == (Persist(alice, by_us=True), NewState(alice.channel_id, final, Source.OWN),
                      FoldParent(alice.channel_id, hub.la_alice.channel_id, proof_of(alice)))


def finalised(hub: Hub) -> tuple[Channel, Channel]:
    alice, carol = open_virtual(hub)
    alice, sent = transition(alice, OwnUpdate(ALICE, ((ETH, ETHER),)))
    carol, answer = deliver(carol, sent[1], ALICE, CAROL)
    alice, _ = deliver(alice, answer[1], CAROL, ALICE)
    alice, sent = transition(alice, OwnUpdate(ALICE, (), True))
    carol, asked = deliver(carol, sent[1], ALICE, CAROL)
    carol, answer = transition(carol, RespondUpdate(CAROL, asked[0].update_id, True))  # type: ignore[union-attr]
    alice, _ = deliver(alice, answer[1], CAROL, ALICE)
    return alice, carol


def test_a_fold_puts_the_final_balances_back_and_the_intermediary_checks_it() -> None:
    hub = make_hub()
    la_a, la_i, lc_c, lc_i = locked_pair(hub)
    v_alice, v_carol = finalised(hub)
    proof = proof_of(v_alice)
    folded, sent = lock(la_a, proof)
    expected = State(la_a.channel_id, 2, (ETH,), ((9 * ETHER, 11 * ETHER),), False)
    assert folded.staged is not None and folded.staged.state == expected
    assert sent == (Persist(folded), SendUpdate(INGRID.address, expected,
                                                folded.staged.signature, proof))
    _, events = deliver(la_i, sent[1], ALICE, INGRID)
    assert events == (AwaitingMatch(la_i.channel_id, signing_digest(expected), proof),)
    # carol's side: she stands for herself (V's 1) at L_C's 0, ingrid for alice.
    folded_c, sent_c = lock(lc_c, proof_of(v_carol), CAROL)
    assert folded_c.staged is not None
    assert folded_c.staged.state.balances == ((11 * ETHER, 9 * ETHER),)
    assert not folded_c.staged.state.locked
    _, events_c = deliver(lc_i, sent_c[1], CAROL, INGRID)
    assert isinstance(events_c[0], AwaitingMatch)


def test_the_intermediary_refuses_a_fold_of_another_outcome() -> None:
    hub = make_hub()
    la_a, la_i, _, _ = locked_pair(hub)
    v_alice, _ = finalised(hub)
    proof = proof_of(v_alice)
    honest = folded_state(la_a.latest, 2, proof)
    skewed = replace(honest, balances=((10 * ETHER, 10 * ETHER),))
    new, events = transition(la_i, UpdateReceived(ALICE.address, skewed, sign(ALICE, skewed),
                                                  INGRID, proof))
    assert new is la_i and events[0] == Refused(la_i.channel_id, ALICE.address, Reason.VIRTUAL,
                                                "version 2")
    not_final = replace(proof.state, is_final=False)
    bad = replace(proof, state=not_final, signatures=(sign(ALICE, not_final),
                                                      sign(CAROL, not_final)))
    new, events = transition(la_i, UpdateReceived(ALICE.address, honest, sign(ALICE, honest),
                                                  INGRID, bad))
    assert new is la_i and events[0].reason is Reason.VIRTUAL  # type: ignore[union-attr]


def test_a_virtual_state_that_lists_an_asset_twice_is_neither_locked_nor_folded() -> None:
    """Both virtual participants may be one attacker, who signs any virtual state. A final
    state listing ETH twice, 1 wei in the first column, once made the intermediary sign a
    ledger state holding 1 wei more than the channel (the check compared the last column
    with the lock, the fold added both): the contract then pays each side its deposit, and
    every payment to the intermediary in that ledger is undone. Refused now, as is a lock of
    such a version 0; and we make neither."""
    hub = make_hub()
    la_a, la_i, _, _ = locked_pair(hub)
    v_alice, _ = finalised(hub)
    honest = proof_of(v_alice)
    final = honest.state
    crafted = replace(final, assets=(ETH, ETH), balances=((1, 0), *final.balances))
    proof = replace(honest, state=crafted,
                    signatures=(sign(ALICE, crafted), sign(CAROL, crafted)))
    # The ledger state the fold used to imply: the honest fold, plus 1 wei to the side that
    # stands for virtual participant 0.
    fold = folded_state(la_a.latest, 2, honest)
    lock_ = la_a.latest.locked[0]
    rows = [list(row) for row in fold.balances]
    rows[0][lock_.index_map[0]] += 1
    inflated = replace(fold, balances=tuple((row[0], row[1]) for row in rows))
    assert funds(inflated) != funds(la_a.latest)
    new, events = transition(la_i, UpdateReceived(ALICE.address, inflated,
                                                  sign(ALICE, inflated), INGRID, proof))
    assert new is la_i
    assert events == (Refused(la_i.channel_id, ALICE.address, Reason.VIRTUAL, "version 2"),
                      SendUpdateReject(ALICE.address, la_i.channel_id, 2, Reason.VIRTUAL.value))
    with pytest.raises(InvalidArgument, match="lists an asset twice"):
        folded_state(la_a.latest, 2, proof)
    with pytest.raises(InvalidArgument, match="lists an asset twice"):
        transition(la_a, OwnUpdate(ALICE, (), proof=proof))

    # The lock of such a version 0, whatever ledger state comes with it.
    hub = make_hub()
    opening = proof_of(hub.v_alice)
    v0 = opening.state
    twice = replace(v0, assets=(ETH, ETH), balances=((1, 0), *v0.balances))
    bad_lock = replace(opening, state=twice, signatures=(sign(ALICE, twice), sign(CAROL, twice)))
    honest_lock = locked_state(hub.la_alice.latest, 1, 0, opening)
    new, events = transition(hub.la_ingrid, UpdateReceived(
        ALICE.address, honest_lock, sign(ALICE, honest_lock), INGRID, bad_lock))
    assert new is hub.la_ingrid and events[0] == Refused(
        new.channel_id, ALICE.address, Reason.VIRTUAL, "version 1")
    with pytest.raises(InvalidArgument, match="lists an asset twice"):
        locked_state(hub.la_alice.latest, 1, 0, bad_lock)
    # Nor a version 0 the contract's registerVirtualState refuses (ETH not first): the
    # intermediary could not dispute it.
    token = Address(b"\x70" * 20)
    late = replace(v0, assets=(token, ETH), balances=((0, 0), *v0.balances))
    with pytest.raises(InvalidArgument, match="ETH after another asset"):
        locked_state(replace(hub.la_alice.latest, assets=(ETH, token),
                             balances=(*hub.la_alice.latest.balances, (0, 0))), 1, 0,
                     replace(opening, state=late))


# -- settlement of parents and virtual channels -----------------------------------------------


def test_a_registered_parent_keeps_its_locks_and_concludes_with_them() -> None:
    hub = make_hub()
    la_a, _, _, _ = locked_pair(hub)
    state = la_a.latest
    disputed, events = transition(la_a, Registered(1, 5000, False, state.balances, state.locked))
    assert disputed.dispute is not None and disputed.dispute.state == state
    assert events == (Persist(disputed), Disputed(la_a.channel_id, 1, 5000))
    _, concluded = transition(disputed, ChallengeExpired())
    assert concluded == (Conclude(la_a.channel_id, la_a.params, state),)


def test_a_disputed_virtual_channel_refutes_with_its_final_state_and_never_folds() -> None:
    hub = make_hub()
    v_alice, _ = finalised(hub)
    assert v_alice.phase is Phase.CLOSING
    v0 = State(v_alice.channel_id, 0, (ETH,), ((3 * ETHER, 2 * ETHER),), False)
    disputed, events = transition(v_alice, Registered(0, 9000, False, v0.balances))
    assert disputed.phase is Phase.DISPUTED
    register = events[-1]
    assert register.__class__.__name__ == "Register"
    assert register.state == v_alice.latest and register.params == v_alice.params  # type: ignore[union-attr]


# -- invariants ---------------------------------------------------------------------------------


amount = st.integers(1, 10**30)


@given(st.tuples(amount, amount), st.tuples(amount, amount), st.integers(0, 100), st.data())
def test_lock_and_fold_keep_funds_and_leave_the_intermediary_where_it_started(
        v0: tuple[int, int], spare: tuple[int, int], percent: int, data: st.DataObject) -> None:
    """For any initial split, ledger balances and outcome: each ledger's funds (free and locked)
    never change, and ingrid's free balances over both ledgers end as they began."""
    total = v0[0] + v0[1]
    ledger = ((v0[0] + spare[0], v0[1] + spare[1]),)
    la_a, _ = open_ledger(ALICE, INGRID, ((ledger[0][0], ledger[0][1]),))
    lc_c, _ = open_ledger(CAROL, INGRID, ((ledger[0][1], ledger[0][0]),), share=b"\x33" * 32)
    vp = VirtualParams(3600, 1, (ALICE.address, CAROL.address), (la_a.channel_id, lc_c.channel_id))
    vid = virtual_channel_id(DEPLOYMENT.chain_id, DEPLOYMENT.adjudicator, vp)
    zero = State(vid, 0, (ETH,), ((v0[0], v0[1]),), False)
    alice_out = total * percent // 100
    final = State(vid, data.draw(st.integers(1, 1000)), (ETH,), ((alice_out, total - alice_out),),
                  True)
    proof0 = VirtualProof(vp, zero, (sign(ALICE, zero), sign(CAROL, zero)))
    prooff = VirtualProof(vp, final, (sign(ALICE, final), sign(CAROL, final)))
    ingrid_before = la_a.latest.balances[0][1] + lc_c.latest.balances[0][1]
    la_locked = locked_state(la_a.latest, 1, 0, proof0)
    lc_locked = locked_state(lc_c.latest, 1, 0, proof0)
    la_folded = folded_state(la_locked, 2, prooff)
    lc_folded = folded_state(lc_locked, 2, prooff)
    for before, locked, folded in ((la_a.latest, la_locked, la_folded),
                                   (lc_c.latest, lc_locked, lc_folded)):
        assert funds(before) == funds(locked) == funds(folded)
        assert locked.locked[0].balances == (total,) and not folded.locked
    assert la_folded.balances[0][1] + lc_folded.balances[0][1] == ingrid_before
    assert la_folded.balances[0][0] == ledger[0][0] - v0[0] + alice_out
    assert lc_folded.balances[0][0] == ledger[0][1] - v0[1] + (total - alice_out)


def test_a_lock_spans_the_ledgers_assets_in_their_order() -> None:
    hub = make_hub(assets=(TOKEN,), balances=((4, 1),), ledger_assets=(ETH, TOKEN),
                   ledger_balances=((ETHER, ETHER), (10, 10)))
    new, _ = lock(hub.la_alice, proof_of(hub.v_alice))
    assert new.staged is not None
    assert new.staged.state.balances == ((ETHER, ETHER), (6, 9))
    assert new.staged.state.locked == (SubAlloc(hub.v_alice.channel_id, (0, 5), (0, 1)),)
