"""Intermediary fees in the core: the fee schedule, a lock that pays the intermediary in the same
state, the intermediary's exact check of it, and the fold after it (docs/protocol.md
"Intermediary fees"). Amounts are checked to the wei."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perund.channel.changes import UpdateReceived
from perund.channel.encoding import signing_digest, virtual_channel_id
from perund.channel.events import AwaitingMatch, Reason, Refused, SendUpdate, SendUpdateReject
from perund.channel.fees import PPM, FeeTerms, fee_amounts, fee_field, fee_for, within
from perund.channel.machine import transition
from perund.channel.rules import funds
from perund.channel.types import ETH, State, SubAlloc, VirtualParams, VirtualProof
from perund.channel.virtual import folded_state, locked_state, proof_of
from perund.errors import FailedPrecondition, InvalidArgument

from .factories import deliver, sign
from .test_virtual import finalised, lock, locked_pair
from .virtual_factories import ALICE, CAROL, DEPLOYMENT, ETHER, INGRID, TOKEN, make_hub, open_ledger

FEE = ETHER // 100


def with_fee(proof: VirtualProof, *fee: int) -> VirtualProof:
    return replace(proof, fee=tuple(fee))


# -- the schedule ------------------------------------------------------------------------------


def test_a_fee_is_a_base_plus_parts_per_million_rounded_down() -> None:
    schedule = {ETH: FeeTerms(10**14, 1000), TOKEN: FeeTerms(0, 1)}
    # 5 ETH locked: 0.0001 + 5 * 1000 / 1e6 = 0.0051 ETH; 999,999 token units at 1 ppm: 0.
    assert fee_for(schedule, (ETH, TOKEN), (5 * ETHER, 999_999)) == (51 * 10**14, 0)
    assert fee_for(schedule, (TOKEN,), (2_000_001,)) == (2,)
    assert fee_for({}, (ETH,), (5 * ETHER,)) == (0,)  # an asset not listed is carried free
    assert fee_for({ETH: FeeTerms(7, PPM)}, (ETH,), (5,)) == (12,)  # a million ppm: all of it


@pytest.mark.parametrize(("base", "ppm"), [(-1, 0), (0, -1), (0, PPM + 1), (2**256, 0),
                                           (1.5, 0), (0, True)])
def test_fee_terms_out_of_range_are_refused(base: object, ppm: object) -> None:
    with pytest.raises(ValueError, match="fee"):
        FeeTerms(base, ppm)  # type: ignore[arg-type]


def test_a_fee_of_zero_travels_as_none() -> None:
    assert fee_field((0, 0)) == () and fee_field((0, 3)) == (0, 3)
    assert fee_amounts((), 2) == (0, 0) and fee_amounts((1, 2), 2) == (1, 2)
    assert within((1, 2), (1, 3)) and not within((1, 4), (1, 3))


# -- the lock pays it --------------------------------------------------------------------------


def test_the_openers_lock_moves_the_fee_to_the_intermediary_in_the_same_state() -> None:
    hub = make_hub()
    proof = with_fee(proof_of(hub.v_alice), FEE)
    new, events = lock(hub.la_alice, proof)
    # 10/10 ETH; V locks alice's 3 and (by ingrid) carol's 2; alice pays ingrid 0.01 ETH.
    state = State(hub.la_alice.channel_id, 1, (ETH,), ((7 * ETHER - FEE, 8 * ETHER + FEE),),
                  False, (SubAlloc(hub.v_alice.channel_id, (5 * ETHER,), (0, 1)),))
    assert new.staged is not None and new.staged.state == state
    assert funds(state) == funds(hub.la_alice.latest)
    assert events[1] == SendUpdate(INGRID.address, state, new.staged.signature, proof)
    waiting, held = deliver(hub.la_ingrid, events[1], ALICE, INGRID)
    assert held == (AwaitingMatch(hub.la_ingrid.channel_id, signing_digest(state), proof),)
    assert waiting.staged is not None and waiting.staged.state == state


def test_the_fee_in_a_lock_must_be_exactly_what_the_state_moves() -> None:
    hub = make_hub()
    plain = proof_of(hub.v_alice)
    paid = with_fee(plain, FEE)
    cases = {
        "the state pays no fee, the proof says it does": (locked_state(
            hub.la_alice.latest, 1, 0, plain), paid),
        "the state pays a fee the proof does not name": (locked_state(
            hub.la_alice.latest, 1, 0, paid), plain),
        "the state pays less than the proof says": (locked_state(
            hub.la_alice.latest, 1, 0, with_fee(plain, FEE - 1)), paid),
    }
    for state, proof in cases.values():
        new, events = transition(hub.la_ingrid, UpdateReceived(
            ALICE.address, state, sign(ALICE, state), INGRID, proof))
        assert new is hub.la_ingrid
        assert events == (Refused(new.channel_id, ALICE.address, Reason.VIRTUAL, "version 1"),
                          SendUpdateReject(ALICE.address, new.channel_id, 1,
                                           Reason.VIRTUAL.value))


def test_only_the_opener_pays_and_never_in_a_fold() -> None:
    hub = make_hub()
    carols = with_fee(proof_of(hub.v_carol), FEE)
    with pytest.raises(FailedPrecondition, match="only the virtual channel's opener pays"):
        lock(hub.lc_carol, carols, CAROL)
    # carol's node would not make it; ingrid refuses it all the same.
    state = locked_state(hub.lc_carol.latest, 1, 0, carols)
    new, events = transition(hub.lc_ingrid, UpdateReceived(
        CAROL.address, state, sign(CAROL, state), INGRID, carols))
    assert new is hub.lc_ingrid and events[0] == Refused(
        new.channel_id, CAROL.address, Reason.VIRTUAL, "version 1")
    la_a, la_i, _, _ = locked_pair(hub)
    v_alice, _ = finalised(hub)
    final = with_fee(proof_of(v_alice), FEE)
    with pytest.raises(FailedPrecondition, match="a fold carries no fee"):
        lock(la_a, final)
    folded = folded_state(la_a.latest, 2, final)
    new, events = transition(la_i, UpdateReceived(ALICE.address, folded, sign(ALICE, folded),
                                                  INGRID, final))
    assert new is la_i and events[0] == Refused(la_i.channel_id, ALICE.address,
                                                Reason.VIRTUAL, "version 2")


def test_a_fee_the_free_balance_cannot_cover_is_not_signed() -> None:
    hub = make_hub(ledger_balances=((3 * ETHER, 10 * ETHER),))  # alice's 3 ETH is her share
    with pytest.raises(InvalidArgument, match="the intermediary's fee") as raised:
        lock(hub.la_alice, with_fee(proof_of(hub.v_alice), 1))
    assert raised.value.data["requirement"] == "at most 0"
    with pytest.raises(InvalidArgument, match="one amount per asset"):
        lock(hub.la_alice, with_fee(proof_of(hub.v_alice), 1, 1))


def test_the_fold_after_a_paid_lock_pays_everyone_exactly() -> None:
    hub = make_hub()
    la_a = hub.la_alice
    locked = locked_state(la_a.latest, 1, 0, with_fee(proof_of(hub.v_alice), FEE))
    v_alice, _ = finalised(hub)  # alice paid carol 1 ETH in V: alice 2, carol 3
    folded = folded_state(locked, 2, proof_of(v_alice))
    # alice: 10 - 3 - fee + 2; ingrid: 10 - 2 + fee + carol's 3 (she stands for carol here).
    assert folded.balances == ((9 * ETHER - FEE, 11 * ETHER + FEE),) and not folded.locked


amount = st.integers(1, 10**30)


@given(st.tuples(amount, amount), st.tuples(amount, amount), st.integers(0, 100),
       st.integers(0, 10**30), st.integers(0, PPM), st.integers(1, 1000))
def test_a_paid_lock_and_its_fold_leave_the_intermediary_exactly_the_fee_richer(
        v0: tuple[int, int], spare: tuple[int, int], percent: int, base: int, ppm: int,
        version: int) -> None:
    """For any split, outcome and fee terms: each ledger keeps its funds, ingrid ends exactly
    the fee richer over both ledgers, alice with her outcome less the fee, carol with his."""
    total = v0[0] + v0[1]
    (fee,) = fee_for({ETH: FeeTerms(base, ppm)}, (ETH,), (total,))
    la_a, _ = open_ledger(ALICE, INGRID, ((v0[0] + spare[0] + fee, v0[1] + spare[1]),))
    lc_c, _ = open_ledger(CAROL, INGRID, ((v0[1] + spare[1], v0[0] + spare[0]),),
                          share=b"\x33" * 32)
    vp = VirtualParams(3600, 1, (ALICE.address, CAROL.address), (la_a.channel_id, lc_c.channel_id))
    vid = virtual_channel_id(DEPLOYMENT.chain_id, DEPLOYMENT.adjudicator, vp)
    zero = State(vid, 0, (ETH,), ((v0[0], v0[1]),), False)
    alice_out = total * percent // 100
    final = State(vid, version, (ETH,), ((alice_out, total - alice_out),), True)
    paid = VirtualProof(vp, zero, (sign(ALICE, zero), sign(CAROL, zero)), fee_field((fee,)))
    free = VirtualProof(vp, zero, paid.signatures)
    closing = VirtualProof(vp, final, (sign(ALICE, final), sign(CAROL, final)))
    la_locked = locked_state(la_a.latest, 1, 0, paid)
    lc_locked = locked_state(lc_c.latest, 1, 0, free)
    la_folded = folded_state(la_locked, 2, closing)
    lc_folded = folded_state(lc_locked, 2, closing)
    for before, locked_, folded in ((la_a.latest, la_locked, la_folded),
                                    (lc_c.latest, lc_locked, lc_folded)):
        assert funds(before) == funds(locked_) == funds(folded)
    ingrid_before = la_a.latest.balances[0][1] + lc_c.latest.balances[0][1]
    assert la_folded.balances[0][1] + lc_folded.balances[0][1] == ingrid_before + fee
    assert la_folded.balances[0][0] == la_a.latest.balances[0][0] - v0[0] - fee + alice_out
    assert lc_folded.balances[0][0] == lc_c.latest.balances[0][0] - v0[1] + total - alice_out
