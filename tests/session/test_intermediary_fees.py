"""Ingrid's fee as intermediary (docs/protocol.md "Intermediary fees"): her quote, her refusal
of a lock that pays too little or should pay nothing, and what she earns with a pair."""

from __future__ import annotations

from dataclasses import replace

from perund.channel.changes import UpdateReceived
from perund.channel.fees import FeeTerms
from perund.channel.types import ETH
from perund.session.intermediary import UNWILLING
from perund.wire.messages import FeeQuery, FeeQuote, Reject, UpdateReject

from ..channel.virtual_factories import ALICE, CAROL, ETHER, TOKEN
from .test_intermediary import Rig, rig

TERMS = FeeTerms(10**15, 1000)
FEE = 10**15 + 5 * ETHER * 1000 // 10**6  # V locks 5 ETH (alice 3, carol 2)


def charging(enabled: bool = True) -> Rig:
    r = rig(enabled)
    r.ingrid.schedule = {ETH: TERMS}
    return r


def refusal(r: Rig, sender: str, fee: tuple[int, ...]) -> str | None:
    """Ingrid's reason to refuse the party's lock paying `fee` (None: it went to the core)."""
    _, _, lock = r.lock_from(sender, fee)
    address = ALICE.address if sender == "alice" else CAROL.address
    before = len(r.links.sent)
    change = r.ingrid.received(address, lock)
    if change is not None:
        assert isinstance(change, UpdateReceived) and change.proof == lock.proof
        return None
    (peer, answer), = r.links.sent[before:]
    assert peer == address and isinstance(answer, UpdateReject)
    return answer.reason


def test_the_quote_is_her_fee_for_the_amounts_asked() -> None:
    r = charging()
    r.ingrid.quote(ALICE.address, FeeQuery(b"\x07" * 32, (ETH, TOKEN), (5 * ETHER, 10**9)))
    assert r.links.sent == [(ALICE.address, FeeQuote(b"\x07" * 32, (FEE, 0)))]
    closed = charging(enabled=False)
    closed.ingrid.quote(ALICE.address, FeeQuery(b"\x07" * 32, (ETH,), (1,)))
    assert closed.links.sent == [(ALICE.address, Reject(b"\x07" * 32, UNWILLING))]


def test_a_lock_paying_less_than_her_fee_is_refused_naming_it() -> None:
    expected = "fee too low: the intermediary charges 0.006 ETH"  # FEE, in the unit
    assert refusal(charging(), "alice", ()) == expected
    assert refusal(charging(), "alice", (FEE - 1,)) == expected
    assert refusal(charging(), "alice", (FEE,)) is None
    assert refusal(charging(), "alice", (FEE + 1,)) is None  # more is taken as offered
    assert refusal(rig(), "alice", ()) is None  # no fee: nothing asked
    # With the node's currency table: its symbol and decimals (ETH, here relabelled).
    table = charging()
    table.ingrid.asset_label = lambda asset: ("XETH", 15)
    assert refusal(table, "alice", ()) == "fee too low: the intermediary charges 6 XETH"


def test_the_responder_pays_nothing() -> None:
    assert refusal(charging(), "carol", ()) is None
    r = charging()
    _, _, lock = r.lock_from("carol")  # carol's own node would not make one that pays
    paying = replace(lock, proof=replace(lock.proof, fee=(1,)))
    assert r.ingrid.received(CAROL.address, paying) is None
    assert r.links.sent[-1] == (CAROL.address, UpdateReject(
        lock.state.channel_id, lock.state.version,
        "only the virtual channel's opener pays the intermediary a fee"))


def test_a_fee_that_is_not_one_amount_per_asset_is_refused() -> None:
    r = charging()
    _, _, lock = r.lock_from("alice", (FEE,))
    bad = replace(lock, proof=replace(lock.proof, fee=(FEE, 1)))
    assert r.ingrid.received(ALICE.address, bad) is None
    assert r.links.sent[-1][1] == UpdateReject(
        lock.state.channel_id, lock.state.version,
        "the fee does not hold one amount per asset of the virtual channel")


def test_she_earns_the_fee_in_the_openers_ledger_once_she_signs_the_pair() -> None:
    for first in ("alice", "carol"):
        r = charging()
        held = {party: r.lock_from(party, (FEE,) if party == "alice" else ())
                for party in ("alice", "carol")}
        second = "carol" if first == "alice" else "alice"
        r.ingrid.awaiting(held[first][1])
        assert r.ingrid._fees.totals(held["alice"][0]) == {}
        r.ingrid.awaiting(held[second][1])
        la, lc = held["alice"][0], held["carol"][0]
        assert r.ingrid._fees.totals(la) == {ETH: (FEE, 0)} and r.ingrid._fees.totals(lc) == {}
        ledger = r.channels[la]
        assert ledger.current is not None
        assert ledger.current.state.balances == ((7 * ETHER - FEE, 8 * ETHER + FEE),)
