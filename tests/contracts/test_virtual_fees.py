"""Both dispute paths of a virtual channel whose opener paid the intermediary a fee in its lock
(docs/protocol.md "Intermediary fees"): the fee is a plain balance move in L_A's locked state,
so the contract pays everyone exactly, the fee included, with no contract change.

The ledger states are the core's own (`locked_state` with the fee), not hand-made ones.
"""

from __future__ import annotations

from perund.channel.types import ETH, State, VirtualProof
from perund.channel.virtual import locked_state

from .conftest import CHALLENGE, ETHER
from .test_virtual import FUND, V_CHALLENGE, Hub, latest_v, locked_lc
from .test_virtual import hub as hub

FEE = 10**15 + 5 * ETHER * 1000 // 10**6  # base 0.001 ETH + 1000 ppm of the 5 ETH locked


def paid_lock(h: Hub, version: int = 5) -> State:
    """L_A with V locked by alice (3 ETH hers, 2 ETH ingrid's for carol) and the fee paid."""
    before = h.la.state_of(version - 1, (ETH,), ((FUND, FUND),))
    v0 = h.v(0, 3 * ETHER, 2 * ETHER)
    proof = VirtualProof(h.vp, v0, (h.alice.sign_state(v0), h.carol.sign_state(v0)), (FEE,))
    state = locked_state(before, version, 0, proof)
    assert state.balances == ((7 * ETHER - FEE, 8 * ETHER + FEE),)
    return state


def test_carol_vanishes_and_the_fee_stays_paid(hub: Hub) -> None:
    s, chain = hub.setup, hub.setup.chain
    la, lc, v = paid_lock(hub), locked_lc(hub), latest_v(hub)
    hub.register_virtual(hub.la, la, v, s.alice)
    chain.advance(V_CHALLENGE)
    hub.conclude_parent(hub.la, la, [v], s.alice)
    # alice: 7 free less the fee + her 1 in V; ingrid: 8 free + the fee + carol's 4.
    assert hub.paid(hub.la) == (8 * ETHER - FEE, 12 * ETHER + FEE)
    hub.register_virtual(hub.lc, lc, v, s.bob)
    chain.advance(CHALLENGE)
    hub.conclude_parent(hub.lc, lc, [v], s.bob)
    assert hub.paid(hub.lc) == (12 * ETHER, 8 * ETHER)
    # Ingrid put in 20 and got out 20 and the fee; alice paid exactly the fee for the lock.
    assert hub.paid(hub.la)[1] + hub.paid(hub.lc)[1] == 2 * FUND + FEE
    assert sum(hub.paid(hub.la)) + sum(hub.paid(hub.lc)) == 4 * FUND
    assert chain.balance(hub.contract.address) == 0


def test_a_stale_virtual_state_is_refuted_and_the_fee_stays_paid(hub: Hub) -> None:
    s, chain = hub.setup, hub.setup.chain
    la, lc = paid_lock(hub), locked_lc(hub)
    stale, latest = hub.v(1, 3 * ETHER, 2 * ETHER), latest_v(hub, 7)
    hub.register_virtual(hub.la, la, stale, s.alice)  # alice cheats with V's v1
    hub.register_virtual(hub.lc, lc, latest, s.carol)  # carol refutes through L_C
    chain.advance(V_CHALLENGE)
    hub.conclude_parent(hub.la, la, [latest], s.bob)
    hub.conclude_parent(hub.lc, lc, [latest], s.bob)
    assert hub.paid(hub.la) == (8 * ETHER - FEE, 12 * ETHER + FEE)
    assert hub.paid(hub.lc) == (12 * ETHER, 8 * ETHER)
    assert chain.balance(hub.contract.address) == 0


def test_an_old_ledger_state_without_the_lock_lacks_the_fee_and_is_refuted(
        hub: Hub) -> None:
    s, chain = hub.setup, hub.setup.chain
    before = hub.la.state_of(4, (ETH,), ((FUND, FUND),))
    la, v = paid_lock(hub), latest_v(hub)
    hub.la.register(before, s.alice)  # alice: as if she had never locked nor paid
    hub.register_virtual(hub.la, la, v, s.bob)  # ingrid refutes with the lock and the fee
    chain.advance(V_CHALLENGE)
    hub.conclude_parent(hub.la, la, [v], s.bob)
    assert hub.paid(hub.la) == (8 * ETHER - FEE, 12 * ETHER + FEE)
