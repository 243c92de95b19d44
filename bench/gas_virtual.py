"""Virtual-channel dispute paths of bench/gas.py (docs/protocol.md "When someone vanishes or
cheats"): alice (signer 0) and carol (signer 2) each have a ledger with ingrid (signer 1),
L_A = (alice, ingrid) and L_C = (carol, ingrid), each funded 10 + 10 ETH; V = (alice, carol) is
funded by a lock of 5 ETH in each (alice 3 + ingrid 2 in L_A, ingrid 3 + carol 2 in L_C).

The ledgers' deposits are not counted (they are the ETH lives' deposits); each path counts the
registrations and conclusions it takes, and checks every receiver's ETH to the wei.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gas_chain import CHALLENGE, ETHER, Run, as_locked, as_params, as_state
from web3 import Web3

from perund.channel.encoding import virtual_channel_id
from perund.channel.types import ETH, Address, ChannelID, Params, State, SubAlloc, VirtualParams

FUND = 10 * ETHER
LOCK = 5 * ETHER
V_CHALLENGE = 2 * CHALLENGE
ALICE, INGRID, CAROL = 0, 1, 2


@dataclass
class Hub:
    """Both ledgers, funded, and V's identity."""

    run: Run
    la: Params
    lc: Params
    vp: VirtualParams
    vid: ChannelID

    def la_state(self, version: int, free: tuple[int, int], locked: bool = True) -> State:
        lock = (SubAlloc(self.vid, (LOCK,), (0, 1)),) if locked else ()
        return self.run.state(self.la, version, (self.run.eth,), (free,), locked=lock)

    def lc_state(self, version: int, free: tuple[int, int]) -> State:
        # Carol is participant 0 of L_C, ingrid (standing for alice) participant 1.
        lock = (SubAlloc(self.vid, (LOCK,), (1, 0)),)
        return self.run.state(self.lc, version, (self.run.eth,), (free,), locked=lock)

    def v(self, version: int, alice: int, carol: int) -> State:
        return State(self.vid, version, (ETH,), ((alice, carol),))

    def register_virtual(self, who: int, parent: Params, ps: State, vs: State) -> int:
        run = self.run
        call = run.adjudicator.functions.registerVirtualState(
            as_params(parent),
            as_state(ps),
            as_locked(ps),
            run.sigs(parent, ps),
            _as_vparams(self.vp),
            as_state(vs),
            self._v_sigs(vs),
        )
        return run.send(run.accounts[who], call)

    def register(self, who: int, parent: Params, ps: State) -> int:
        call = self.run.adjudicator.functions.register(
            as_params(parent), as_state(ps), self.run.sigs(parent, ps)
        )
        return self.run.send(self.run.accounts[who], call)

    def conclude_parent(self, who: int, parent: Params, ps: State, vs: State) -> int:
        call = self.run.adjudicator.functions.concludeParentState(
            as_params(parent), as_state(ps), as_locked(ps), [as_state(vs)]
        )
        return self.run.send(self.run.accounts[who], call)

    def paid(self, parent: Params, ps: State, vs: State) -> None:
        """Book the parent's outcome: free balances plus V's outcome through the index map."""
        v_out: dict[int, dict[str, int]] = {0: {}, 1: {}}
        (lock,) = ps.locked
        for j, i in enumerate(lock.index_map):
            v_out[i][self.run.eth] = vs.balances[0][j]
        self.run.pay_out(parent, ps, v_out)

    def _v_sigs(self, vs: State) -> list[bytes]:
        signers = self.run.signers
        return [bytes(signers[ALICE].sign_state(vs)), bytes(signers[CAROL].sign_state(vs))]


def _as_vparams(vp: VirtualParams) -> tuple[Any, ...]:
    return (
        vp.challenge_duration,
        vp.nonce,
        [Web3.to_checksum_address(a) for a in vp.participants],
        list(vp.parents),
    )


def _hub(run: Run) -> Hub:
    """Two funded ledgers (deposits outside the books) and V over them."""
    fn = run.adjudicator.functions
    la, lc = run.params((ALICE, INGRID)), run.params((CAROL, INGRID))
    for params in (la, lc):
        cid = run.channel_id(params)
        for index, participant in enumerate(params.participants):
            sender = run.accounts[[s.address for s in run.signers].index(participant)]
            run.send(sender, fn.deposit(cid, index, run.eth, FUND), FUND)
    signers = run.signers
    vp = VirtualParams(
        V_CHALLENGE,
        run.next_nonce(),
        (Address(signers[ALICE].address), Address(signers[CAROL].address)),
        (run.channel_id(la), run.channel_id(lc)),
    )
    adjudicator = Address(bytes.fromhex(run.adjudicator.address[2:]))
    vid = virtual_channel_id(run.w3.eth.chain_id, adjudicator, vp)
    run.open_books()
    return Hub(run, la, lc, vp, vid)


def carol_vanishes(run: Run) -> dict[str, int]:
    """Alice registers L_A with V's latest state and concludes it after V's timeout; ingrid
    settles L_C by the same frozen V state (carol absent, paid all the same)."""
    hub = _hub(run)
    la, lc, v = (
        hub.la_state(5, (7 * ETHER, 8 * ETHER)),
        hub.lc_state(3, (7 * ETHER, 8 * ETHER)),
        hub.v(4, ETHER, 4 * ETHER),
    )
    calls = {"registerVirtualState_LA_and_V": hub.register_virtual(ALICE, hub.la, la, v)}
    run.advance(V_CHALLENGE)
    calls["concludeParentState_LA"] = hub.conclude_parent(ALICE, hub.la, la, v)
    calls["registerVirtualState_LC_V_frozen"] = hub.register_virtual(INGRID, hub.lc, lc, v)
    run.advance(CHALLENGE)
    calls["concludeParentState_LC"] = hub.conclude_parent(INGRID, hub.lc, lc, v)
    hub.paid(hub.la, la, v)
    hub.paid(hub.lc, lc, v)
    run.books.check()
    return calls


def stale_virtual_state_refuted(run: Run) -> dict[str, int]:
    """Alice registers an old V state through L_A; carol refutes it with the latest through L_C
    (registering L_C too); both parents conclude with the latest."""
    hub = _hub(run)
    la, lc = hub.la_state(5, (7 * ETHER, 8 * ETHER)), hub.lc_state(3, (7 * ETHER, 8 * ETHER))
    stale, latest = hub.v(1, 3 * ETHER, 2 * ETHER), hub.v(7, ETHER, 4 * ETHER)
    calls = {
        "registerVirtualState_LA_and_stale_V": hub.register_virtual(ALICE, hub.la, la, stale),
        "registerVirtualState_LC_and_refute_V": hub.register_virtual(CAROL, hub.lc, lc, latest),
    }
    run.advance(V_CHALLENGE)
    calls["concludeParentState_LA"] = hub.conclude_parent(INGRID, hub.la, la, latest)
    calls["concludeParentState_LC"] = hub.conclude_parent(INGRID, hub.lc, lc, latest)
    hub.paid(hub.la, la, latest)
    hub.paid(hub.lc, lc, latest)
    run.books.check()
    return calls


def ledger_without_lock_refuted(run: Run) -> dict[str, int]:
    """Ingrid registers an old L_A state from before the lock; alice refutes it with the
    latest L_A state (the lock) and V's latest state in one call, and concludes L_A."""
    hub = _hub(run)
    old = hub.la_state(2, (FUND, FUND), locked=False)
    la, v = hub.la_state(5, (7 * ETHER, 8 * ETHER)), hub.v(4, ETHER, 4 * ETHER)
    calls = {
        "register_old_LA": hub.register(INGRID, hub.la, old),
        "registerVirtualState_refute_LA_and_V": hub.register_virtual(ALICE, hub.la, la, v),
    }
    run.advance(V_CHALLENGE)
    calls["concludeParentState_LA"] = hub.conclude_parent(ALICE, hub.la, la, v)
    hub.paid(hub.la, la, v)
    run.books.check()
    return calls
