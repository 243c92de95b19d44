"""Virtual channels on-chain (alice, ingrid, carol): each party absent or cheating, paid to the wei.

Ledger L_A = (alice, ingrid), ledger L_C = (carol, ingrid) (carol first: ingrid stands for alice
there, so the index map is (1, 0)), virtual channel V = (alice, carol) funded by a lock of 5 ETH
in each: alice 3 and carol 2 initially. Every ledger is funded 10 + 10 ETH.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
from eth_utils import keccak, to_checksum_address
from web3.contract import Contract

from perund.channel.encoding import Signer, state_hash, virtual_channel_id
from perund.channel.types import ETH, Address, ChannelID, State, SubAlloc, VirtualParams

from .conftest import (
    CHALLENGE,
    ETHER,
    Channel,
    Err,
    Setup,
    as_locked,
    as_params,
    as_state,
    revert_data,
    token_balance,
)

FUND = 10 * ETHER
V_CHALLENGE = 2 * CHALLENGE


def as_vparams(vp: VirtualParams) -> tuple[Any, ...]:
    return (
        vp.challenge_duration,
        vp.nonce,
        [to_checksum_address(a) for a in vp.participants],
        list(vp.parents),
    )


@dataclass
class Hub:
    """Both ledgers, funded, and the virtual channel's identity."""

    setup: Setup
    alice: Signer
    ingrid: Signer
    carol: Signer
    la: Channel  # (alice, ingrid)
    lc: Channel  # (carol, ingrid)
    vp: VirtualParams
    vid: ChannelID

    @property
    def contract(self) -> Contract:
        return self.setup.contract

    def v(self, version: int, alice: int, carol: int, *, final: bool = False) -> State:
        return State(self.vid, version, (ETH,), ((alice, carol),), final)

    def v_sigs(self, state: State) -> list[bytes]:
        return [bytes(self.alice.sign_state(state)), bytes(self.carol.sign_state(state))]

    def la_state(self, version: int, free: tuple[int, int], lock: int | None = 5 * ETHER) -> State:
        locked = () if lock is None else (SubAlloc(self.vid, (lock,), (0, 1)),)
        return self.la.state_of(version, (ETH,), (free,), locked=locked)

    def lc_state(self, version: int, free: tuple[int, int], lock: int | None = 5 * ETHER) -> State:
        locked = () if lock is None else (SubAlloc(self.vid, (lock,), (1, 0)),)
        return self.lc.state_of(version, (ETH,), (free,), locked=locked)

    def register_virtual_call(
        self,
        parent: Channel,
        ps: State,
        vs: State,
        parent_sigs: list[bytes] | None = None,
        v_sigs: list[bytes] | None = None,
        vp: VirtualParams | None = None,
    ) -> Any:
        return parent.fn.registerVirtualState(
            parent.p(),
            as_state(ps),
            as_locked(ps),
            parent.sigs(ps) if parent_sigs is None else parent_sigs,
            as_vparams(vp or self.vp),
            as_state(vs),
            self.v_sigs(vs) if v_sigs is None else v_sigs,
        )

    def register_virtual(
        self, parent: Channel, ps: State, vs: State, sender: str, **kw: Any
    ) -> Any:
        return self.setup.chain.transact(self.register_virtual_call(parent, ps, vs, **kw), sender)

    def conclude_parent_call(self, parent: Channel, ps: State, subs: list[State]) -> Any:
        return parent.fn.concludeParentState(
            parent.p(), as_state(ps), as_locked(ps), [as_state(s) for s in subs]
        )

    def conclude_parent(self, parent: Channel, ps: State, subs: list[State], sender: str) -> Any:
        return self.setup.chain.transact(self.conclude_parent_call(parent, ps, subs), sender)

    def error(self, call: Any, sender: str | None = None) -> Err:
        return self.setup.chain.revert_error(self.contract, call, sender or self.setup.alice)

    def paid(self, channel: Channel) -> tuple[int, int]:
        r0, r1 = channel.receivers
        return (self.setup.chain.balance(r0), self.setup.chain.balance(r1))

    def v_status(self) -> tuple[int, int, int, bytes]:
        phase, version, timeout, h = self.contract.functions.channelStatus(self.vid).call()
        return (int(phase), int(version), int(timeout), bytes(h))


def make_hub(setup: Setup, token: Contract | None = None) -> Hub:
    alice, ingrid, carol = (Signer(os.urandom(32)) for _ in range(3))
    la = setup.channel(signers=(alice, ingrid))
    lc = setup.channel(signers=(carol, ingrid))
    for ledger in (la, lc):
        ledger.deposit(setup.alice, 0, FUND)
        ledger.deposit(setup.bob, 1, FUND)
    vp = VirtualParams(
        V_CHALLENGE,
        int.from_bytes(os.urandom(32), "big"),
        (Address(alice.address), Address(carol.address)),
        (la.id, lc.id),
    )
    adjudicator = Address(bytes.fromhex(setup.contract.address[2:]))
    vid = virtual_channel_id(setup.chain.chain_id, adjudicator, vp)
    return Hub(setup, alice, ingrid, carol, la, lc, vp, vid)


@pytest.fixture
def hub(setup: Setup) -> Hub:
    return make_hub(setup)


# The states every test starts from: the locks (alice 3 + ingrid 2 in L_A, ingrid 3 + carol 2 in
# L_C), V's latest state (alice paid carol 2 ETH: alice 1, carol 4).
def locked_la(hub: Hub, version: int = 5) -> State:
    return hub.la_state(version, (7 * ETHER, 8 * ETHER))


def locked_lc(hub: Hub, version: int = 3) -> State:
    return hub.lc_state(version, (8 * ETHER, 7 * ETHER))


def latest_v(hub: Hub, version: int = 4) -> State:
    return hub.v(version, ETHER, 4 * ETHER)


# ------------------------------------------------------------------ dispute paths


def test_carol_vanishes_alice_and_ingrid_settle_through_their_ledgers(hub: Hub) -> None:
    s, chain = hub.setup, hub.setup.chain
    la, lc, v = locked_la(hub), locked_lc(hub), latest_v(hub)
    receipt = hub.register_virtual(hub.la, la, v, s.alice)
    registered = [e["channelID"] for e in hub.la.events(receipt, "Registered")]
    assert registered == [hub.la.id, hub.vid]
    (locks,) = hub.la.events(receipt, "RegisteredLocks")
    assert locks["version"] == 5
    assert [(x["id"], list(x["balances"]), list(x["indexMap"])) for x in locks["locked"]] == [
        (hub.vid, [5 * ETHER], [0, 1])
    ]
    chain.advance(V_CHALLENGE)
    hub.conclude_parent(hub.la, la, [v], s.alice)
    # alice: 7 free + 1 from V; ingrid: 8 free + carol's 4 from V.
    assert hub.paid(hub.la) == (8 * ETHER, 12 * ETHER)
    # Ingrid settles L_C with the same frozen V state; carol is absent but paid.
    receipt = hub.register_virtual(hub.lc, lc, v, s.bob)
    assert [e["channelID"] for e in hub.lc.events(receipt, "Registered")] == [hub.lc.id]
    chain.advance(CHALLENGE)
    hub.conclude_parent(hub.lc, lc, [v], s.bob)
    assert hub.paid(hub.lc) == (12 * ETHER, 8 * ETHER)  # carol 8 + 4, ingrid 7 + alice's 1
    # Ingrid put in 20 and got out 20: the virtual channel cost her nothing.
    assert hub.paid(hub.la)[1] + hub.paid(hub.lc)[1] == 2 * FUND
    assert chain.balance(hub.contract.address) == 0


def test_a_stale_virtual_state_is_refuted_through_the_other_parent(hub: Hub) -> None:
    s, chain = hub.setup, hub.setup.chain
    la, lc = locked_la(hub), locked_lc(hub)
    stale, latest = hub.v(1, 3 * ETHER, 2 * ETHER), latest_v(hub, 7)
    hub.register_virtual(hub.la, la, stale, s.alice)  # alice cheats with V's v1
    hub.register_virtual(hub.lc, lc, latest, s.carol)  # carol refutes through L_C
    assert hub.v_status()[1] == 7
    chain.advance(V_CHALLENGE)
    # The stale state no longer concludes anything.
    assert hub.error(hub.conclude_parent_call(hub.la, la, [stale])) == (
        "SubStateMismatch",
        (hub.vid,),
    )
    hub.conclude_parent(hub.la, la, [latest], s.bob)
    hub.conclude_parent(hub.lc, lc, [latest], s.bob)
    assert hub.paid(hub.la) == (8 * ETHER, 12 * ETHER)
    assert hub.paid(hub.lc) == (12 * ETHER, 8 * ETHER)


def test_the_virtual_record_is_frozen_once_its_timeout_passed(hub: Hub) -> None:
    s, chain = hub.setup, hub.setup.chain
    la, lc, v = locked_la(hub), locked_lc(hub), latest_v(hub)
    hub.register_virtual(hub.la, la, v, s.alice)
    chain.advance(V_CHALLENGE)
    newer = hub.v(9, 0, 5 * ETHER)
    assert hub.error(hub.register_virtual_call(hub.lc, lc, newer), s.carol) == (
        "ChallengeTimedOut",
        (),
    )
    # Registering the frozen state again (and L_C with it) is fine: nothing changes for V.
    hub.register_virtual(hub.lc, lc, v, s.carol)
    assert hub.v_status()[1] == 4


def test_a_final_virtual_state_does_not_skip_its_timeout(hub: Hub) -> None:
    s, chain = hub.setup, hub.setup.chain
    la, final = locked_la(hub), hub.v(8, 2 * ETHER, 3 * ETHER, final=True)
    hub.register_virtual(hub.la, la, final, s.alice)
    chain.advance(CHALLENGE)  # the parent's timeout, not yet V's
    v_timeout = hub.v_status()[2]
    assert hub.error(hub.conclude_parent_call(hub.la, la, [final])) == (
        "ChallengeNotOver",
        (v_timeout,),
    )
    # A higher version may still refute a final virtual state before its timeout.
    refutation = hub.v(9, ETHER, 4 * ETHER)
    hub.register_virtual(hub.lc, locked_lc(hub), refutation, s.carol)
    chain.advance(CHALLENGE)
    hub.conclude_parent(hub.la, la, [refutation], s.alice)
    assert hub.paid(hub.la) == (8 * ETHER, 12 * ETHER)


def test_ingrid_registers_an_old_ledger_state_without_the_lock(hub: Hub) -> None:
    s, chain = hub.setup, hub.setup.chain
    old = hub.la_state(2, (FUND, FUND), lock=None)
    hub.la.register(old, s.bob)  # ingrid: as if V had never been funded
    la, v = locked_la(hub), latest_v(hub)
    hub.register_virtual(hub.la, la, v, s.alice)  # alice refutes with the lock and V
    chain.advance(V_CHALLENGE)
    assert hub.error(hub.la.fn.conclude(hub.la.p(), as_state(old))) == ("StateMismatch", ())
    hub.conclude_parent(hub.la, la, [v], s.alice)
    assert hub.paid(hub.la) == (8 * ETHER, 12 * ETHER)


def test_the_registered_parent_state_needs_no_signatures(hub: Hub) -> None:
    s = hub.setup
    la, v = locked_la(hub), latest_v(hub)
    hub.register_virtual(hub.la, la, v, s.alice)
    # Carol holds no signature on L_A: she refutes through L_A's registered state, whose content
    # the Registered and RegisteredLocks events give her.
    newer = hub.v(6, ETHER // 2, 4 * ETHER + ETHER // 2)
    hub.register_virtual(hub.la, la, newer, s.carol, parent_sigs=[b"", b""])
    assert hub.v_status()[1] == 6
    # Not the registered state: then the signatures are checked.
    other = locked_la(hub, 6)
    assert hub.error(hub.register_virtual_call(hub.la, other, newer, parent_sigs=[b"", b""])) == (
        "MalformedSignature",
        (0,),
    )


def test_two_virtual_channels_in_one_parent_and_a_late_registration(setup: Setup) -> None:
    hub = make_hub(setup)
    chain = setup.chain
    vp2 = VirtualParams(CHALLENGE, 7, hub.vp.participants, hub.vp.parents)
    adjudicator = Address(bytes.fromhex(setup.contract.address[2:]))
    vid2 = virtual_channel_id(chain.chain_id, adjudicator, vp2)
    la = hub.la.state_of(
        5,
        (ETH,),
        ((6 * ETHER, 7 * ETHER),),
        locked=(SubAlloc(hub.vid, (5 * ETHER,), (0, 1)), SubAlloc(vid2, (2 * ETHER,), (0, 1))),
    )
    v1 = latest_v(hub)
    v2 = State(vid2, 3, (ETH,), ((2 * ETHER, 0),))
    v2_sigs = hub.v_sigs(v2)
    hub.register_virtual(hub.la, la, v1, setup.alice)
    chain.advance(V_CHALLENGE)
    # The parent's dispute is over, but its second virtual channel was never registered.
    assert hub.error(hub.conclude_parent_call(hub.la, la, [v1, v2])) == (
        "SubChannelNotRegistered",
        (vid2,),
    )
    # Registering it through the timed-out parent state is still possible (no-op for the parent).
    hub.register_virtual(hub.la, la, v2, setup.bob, parent_sigs=[b"", b""], v_sigs=v2_sigs, vp=vp2)
    assert hub.error(hub.conclude_parent_call(hub.la, la, [v1, v2]))[0] == "ChallengeNotOver"
    chain.advance(CHALLENGE)
    assert hub.error(hub.conclude_parent_call(hub.la, la, [v2, v1])) == ("SubStatesMismatch", ())
    hub.conclude_parent(hub.la, la, [v1, v2], setup.alice)
    # alice: 6 + 1 + 2; ingrid: 7 + 4 + 0.
    assert hub.paid(hub.la) == (9 * ETHER, 11 * ETHER)


def test_a_virtual_channel_over_a_subset_of_the_assets(setup: Setup) -> None:
    token = setup.token()
    alice, ingrid, carol = (Signer(os.urandom(32)) for _ in range(3))
    la = setup.channel(signers=(alice, ingrid))
    lc = setup.channel(signers=(carol, ingrid))
    la.deposit(setup.alice, 0, ETHER)
    for ledger in (la, lc):
        ledger.deposit_token(token, setup.alice, 0, 100)
        ledger.deposit_token(token, setup.bob, 1, 100)
    tok = Address(bytes.fromhex(token.address[2:]))
    vp = VirtualParams(
        CHALLENGE, 1, (Address(alice.address), Address(carol.address)), (la.id, lc.id)
    )
    adjudicator = Address(bytes.fromhex(setup.contract.address[2:]))
    vid = virtual_channel_id(setup.chain.chain_id, adjudicator, vp)
    hub = Hub(setup, alice, ingrid, carol, la, lc, vp, vid)
    # V holds 30 tokens: alice 20, carol 10; now alice 5, carol 25.
    v = State(vid, 2, (tok,), ((5, 25),))
    la_state = la.state_of(
        1, (ETH, tok), ((ETHER, 0), (80, 90)), locked=(SubAlloc(vid, (0, 30), (0, 1)),)
    )
    lc_state = lc.state_of(1, (tok,), ((90, 80),), locked=(SubAlloc(vid, (30,), (1, 0)),))
    hub.register_virtual(la, la_state, v, setup.alice)
    hub.register_virtual(lc, lc_state, v, setup.bob)
    setup.chain.advance(CHALLENGE)
    hub.conclude_parent(la, la_state, [v], setup.alice)
    hub.conclude_parent(lc, lc_state, [v], setup.alice)
    ra, rc = la.receivers, lc.receivers
    assert setup.chain.balance(ra[0]) == ETHER
    assert (token_balance(token, ra[0]), token_balance(token, ra[1])) == (85, 115)
    assert (token_balance(token, rc[0]), token_balance(token, rc[1])) == (115, 85)
    assert token_balance(token, ra[1]) + token_balance(token, rc[1]) == 200  # ingrid: neutral


def test_an_absurd_parent_outcome_saturates_into_the_underfunded_rule(hub: Hub) -> None:
    """Free balance 2^256 - 1 plus a virtual outcome: no overflow revert, each gets its deposit."""
    s = hub.setup
    la = hub.la_state(5, (2**256 - 1, 0))
    v = latest_v(hub)
    hub.register_virtual(hub.la, la, v, s.alice)
    s.chain.advance(V_CHALLENGE)
    hub.conclude_parent(hub.la, la, [v], s.alice)
    assert hub.paid(hub.la) == (FUND, FUND)


# ------------------------------------------------------------------ what cheaters cannot do


def test_virtual_states_with_other_totals_fit_no_parent(hub: Hub) -> None:
    """Alice and carol together cannot change V's totals: no lock ingrid signed fits them."""
    inflated = hub.v(9, 6 * ETHER, 0)
    for parent, ps in ((hub.la, locked_la(hub)), (hub.lc, locked_lc(hub))):
        assert hub.error(hub.register_virtual_call(parent, ps, inflated)) == (
            "SubAllocMismatch",
            (),
        )


def test_a_third_channel_cannot_vouch_for_the_virtual_channel(hub: Hub) -> None:
    """Alice and carol share a ledger and lock V in it with other totals: not V's parent."""
    third = hub.setup.channel(signers=(hub.alice, hub.carol))
    ps = third.state_of(1, (ETH,), ((0, 0),), locked=(SubAlloc(hub.vid, (6 * ETHER,), (0, 1)),))
    assert hub.error(hub.register_virtual_call(third, ps, hub.v(9, 6 * ETHER, 0))) == (
        "NotParent",
        (),
    )


# ------------------------------------------------------------------ every revert


def test_register_virtual_reverts(hub: Hub) -> None:
    la, v = locked_la(hub), latest_v(hub)
    call = hub.register_virtual_call
    other_vp = VirtualParams(V_CHALLENGE, hub.vp.nonce + 1, hub.vp.participants, hub.vp.parents)
    assert hub.error(call(hub.la, la, v, vp=other_vp)) == ("ChannelIDMismatch", ())
    wrong_id = State(hub.la.id, 4, (ETH,), ((ETHER, 4 * ETHER),))
    assert hub.error(call(hub.la, la, wrong_id)) == ("ChannelIDMismatch", ())
    not_locked = hub.la_state(5, (7 * ETHER, 8 * ETHER), lock=None)
    assert hub.error(call(hub.la, not_locked, v)) == ("NotLocked", ())
    # V state with an asset the parent lacks, or nothing for a locked asset.
    token = Address(b"\x11" * 20)
    assert hub.error(call(hub.la, la, State(hub.vid, 4, (token,), ((1, 4),)))) == (
        "SubAllocMismatch",
        (),
    )
    two = hub.la.state_of(
        5, (ETH, token), ((7, 8), (0, 0)), locked=(SubAlloc(hub.vid, (5 * ETHER, 1), (0, 1)),)
    )
    assert hub.error(call(hub.la, two, v)) == ("SubAllocMismatch", ())
    assert hub.error(call(hub.la, la, v, v_sigs=hub.v_sigs(v)[::-1])) == (
        "InvalidSignature",
        (0,),
    )
    assert hub.error(call(hub.la, la, v, parent_sigs=hub.la.sigs(la)[::-1])) == (
        "InvalidSignature",
        (0,),
    )
    hub.register_virtual(hub.la, la, v, hub.setup.alice)
    older = hub.la_state(4, (7 * ETHER, 8 * ETHER))
    assert hub.error(call(hub.la, older, v)) == ("StaleVersion", (5, 4))
    stale_v = hub.v(2, ETHER, 4 * ETHER)
    assert hub.error(call(hub.la, la, stale_v)) == ("StaleVersion", (4, 2))


ONE = b"\x01" * 32


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([(ONE, [5, 0], [0, 1])], "one amount per asset"),
        ([(ONE, [5], [1, 1])], "index map"),
        ([(ONE, [5], [0, 0])], "index map"),
        ([(ONE, [5], [0, 2])], "index map"),
        ([(ONE, [5], [0, 1]), (ONE, [5], [0, 1])], "the same virtual channel twice"),
    ],
)
def test_malformed_locks_are_refused(hub: Hub, raw: list[Any], reason: str) -> None:
    # Raw ABI values: the Python SubAlloc and State refuse these shapes.
    ps = hub.la_state(5, (7 * ETHER, 8 * ETHER))
    digest = _parent_digest(hub.contract, ps, raw)
    sigs = [bytes(s.sign_digest(digest)) for s in (hub.alice, hub.ingrid)]
    call = hub.la.fn.registerVirtualState(
        hub.la.p(),
        as_state(ps),
        raw,
        sigs,
        as_vparams(hub.vp),
        as_state(latest_v(hub)),
        hub.v_sigs(latest_v(hub)),
    )
    assert hub.error(call) == ("InvalidSubAlloc", ()), reason


def _parent_digest(contract: Contract, ps: State, raw: list[Any]) -> bytes:
    h = bytes(contract.functions.hashSignedState(as_state(ps), raw).call())
    return keccak(b"\x19Ethereum Signed Message:\n32" + h)


def test_a_dirty_index_map_reverts_without_data(hub: Hub) -> None:
    """Solidity's own decoder refuses a uint8 with bits above 8: a revert without data."""
    call = hub.register_virtual_call(hub.la, locked_la(hub), latest_v(hub))
    data = bytearray(bytes.fromhex(call._encode_transaction_data()[2:]))
    # The lock's tuple: id, offset of its balances (0x80), indexMap (0, 1).
    lock = hub.vid + (0x80).to_bytes(32, "big") + (0).to_bytes(32, "big") + (1).to_bytes(32, "big")
    at = data.index(lock) + 96
    tx = {"from": hub.setup.alice, "to": hub.contract.address}
    hub.setup.chain.w3.eth.call({**tx, "data": bytes(data)})  # clean: fine
    data[at : at + 32] = (1 << 8 | 1).to_bytes(32, "big")
    with pytest.raises(Exception) as info:
        hub.setup.chain.w3.eth.call({**tx, "data": bytes(data)})
    assert revert_data(info.value) in (b"", None)


def test_conclude_parent_reverts(hub: Hub) -> None:
    s, chain = hub.setup, hub.setup.chain
    la, v = locked_la(hub), latest_v(hub)
    call = hub.conclude_parent_call
    assert hub.error(call(hub.la, la, [v])) == ("NotRegistered", ())
    hub.register_virtual(hub.la, la, v, s.alice)
    parent_timeout = hub.la.status()[2]
    assert hub.error(call(hub.la, la, [v])) == ("ChallengeNotOver", (parent_timeout,))
    chain.advance(V_CHALLENGE)
    assert hub.error(call(hub.la, la, [])) == ("SubStatesMismatch", ())
    assert hub.error(call(hub.la, la, [v, v])) == ("SubStatesMismatch", ())
    assert hub.error(call(hub.la, la, [hub.la_state(1, (1, 1))])) == ("SubStatesMismatch", ())
    assert hub.error(call(hub.la, la, [hub.v(4, 2 * ETHER, 3 * ETHER)])) == (
        "SubStateMismatch",
        (hub.vid,),
    )
    other = hub.la_state(5, (7 * ETHER, 8 * ETHER), lock=4 * ETHER)
    assert hub.error(call(hub.la, other, [v])) == ("StateMismatch", ())
    # The ledger conclude cannot skip the locks: the registered hash includes them.
    assert hub.error(hub.la.fn.conclude(hub.la.p(), as_state(la))) == ("StateMismatch", ())
    hub.conclude_parent(hub.la, la, [v], s.alice)
    assert hub.error(call(hub.la, la, [v])) == ("ChannelConcluded", ())
    assert hub.error(hub.register_virtual_call(hub.la, la, v)) == ("ChannelConcluded", ())


def test_a_lock_the_virtual_state_does_not_fit_blocks_only_its_signers(setup: Setup) -> None:
    """L_C's two participants signed a lock of 4 where V holds 5: L_C cannot conclude with V
    (SubAllocMismatch), L_A concludes normally."""
    hub = make_hub(setup)
    la, v = locked_la(hub), latest_v(hub)
    lc = hub.lc_state(3, (8 * ETHER, 8 * ETHER), lock=4 * ETHER)
    hub.register_virtual(hub.la, la, v, setup.alice)
    assert hub.error(hub.register_virtual_call(hub.lc, lc, v)) == ("SubAllocMismatch", ())
    setup.chain.advance(V_CHALLENGE)
    hub.conclude_parent(hub.la, la, [v], setup.alice)
    assert hub.paid(hub.la) == (8 * ETHER, 12 * ETHER)


def test_python_and_contract_agree_on_virtual_ids_and_locked_hashes(hub: Hub) -> None:
    fn = hub.contract.functions
    assert bytes(fn.idOfVirtualChannel(as_vparams(hub.vp)).call()) == hub.vid
    assert hub.vid != hub.la.id and hub.vid != hub.lc.id
    la = locked_la(hub)
    assert bytes(fn.hashSignedState(as_state(la), as_locked(la)).call()) == state_hash(la)
    plain = hub.la_state(5, (FUND, FUND), lock=None)
    assert bytes(fn.hashSignedState(as_state(plain), []).call()) == state_hash(plain)
    assert state_hash(plain) == bytes(fn.hashState(as_state(plain)).call())
    assert as_params(hub.la.params)  # the ledger ABI is the v1 one
