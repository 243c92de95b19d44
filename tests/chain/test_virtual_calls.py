"""registerVirtualState and concludeParentState through the backend, on both chains: the
events a watcher turns into the core's inputs (a parent's Registered with its locks), and the
payouts to the wei."""

from __future__ import annotations

import os

import pytest
import pytest_twisted

from perund.chain.results import Phase
from perund.chain.watcher import change_of
from perund.channel.changes import Registered
from perund.channel.encoding import Signer, state_hash, virtual_channel_id
from perund.channel.types import ETH, ChannelID, State, SubAlloc, VirtualParams, VirtualProof
from perund.errors import TxReverted

from .conftest import ETHER


@pytest_twisted.ensureDeferred
async def test_a_virtual_state_registered_through_its_parent_and_concluded(
        chain, new_channel) -> None:  # type: ignore[no-untyped-def]
    backend = chain.backend
    ledger = new_channel(duration=100)                       # (alice, ingrid)
    alice, ingrid = ledger.accounts
    await backend.deposit(alice, ledger.id, 0, ETH, 5 * ETHER)
    await backend.deposit(ingrid, ledger.id, 1, ETH, 5 * ETHER)
    carol = Signer(os.urandom(32))
    vp = VirtualParams(200, 7, (ledger.signers[0].address, carol.address),
                       (ledger.id, ChannelID(os.urandom(32))))
    vid = virtual_channel_id(backend.chain_id, backend.adjudicator, vp)
    v = State(vid, 3, (ETH,), ((ETHER, 2 * ETHER),), False)
    proof = VirtualProof(vp, v, (ledger.signers[0].sign_state(v), carol.sign_state(v)))
    parent = State(ledger.id, 2, (ETH,), ((3 * ETHER, 4 * ETHER),), False,
                   (SubAlloc(vid, (3 * ETHER,), (0, 1)),))
    receipt = await backend.register_virtual(ingrid, ledger.params, parent, ledger.sign(parent),
                                             proof)
    events = receipt.events
    assert [e.name for e in events] == ["Registered", "RegisteredLocks", "Registered"]
    change = change_of(events[0], events[1:])
    assert isinstance(change, Registered) and change.locked == parent.locked
    assert change.balances == parent.balances
    assert change_of(events[2], ()) == Registered(3, events[2].args["timeout"], False,
                                                  ((ETHER, 2 * ETHER),))
    status = await backend.channel_status(vid)
    assert status.phase is Phase.DISPUTE and status.state_hash == state_hash(v)
    # Through the registered parent state, its signatures are not checked: a no-op here.
    await backend.register_virtual(alice, ledger.params, parent,
                                   (b"\x00" * 65, b"\x00" * 65), proof)
    await backend.advance_time(101)
    with pytest.raises(TxReverted) as early:                 # V's own timeout is later
        await backend.conclude_parent(alice, ledger.params, parent, (v,))
    assert early.value.data["error"] == "ChallengeNotOver"
    await backend.advance_time(100)
    before = (await backend.balance(alice.address), await backend.balance(ingrid.address))
    concluded = await backend.conclude_parent(ingrid, ledger.params, parent, (v,))
    paid = {e.args["receiver"]: e.args["amount"] for e in concluded.events_named("PaidOut")}
    assert paid == {alice.address: 4 * ETHER, ingrid.address: 6 * ETHER}
    after = (await backend.balance(alice.address), await backend.balance(ingrid.address))
    assert after == (before[0] + 4 * ETHER, before[1] + 6 * ETHER - concluded.fee)
    assert (await backend.channel_status(ledger.id)).phase is Phase.CONCLUDED
