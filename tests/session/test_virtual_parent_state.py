"""The ledger state a virtual channel is registered through: with a payment on the ledger whose
countersignature was left unchecked (docs/protocol.md, "Verification by interest"), the one the
chain takes, holding the lock."""

from __future__ import annotations

from perund.channel.changes import OwnUpdate, UpdateAcceptReceived
from perund.channel.events import SendUpdate, SendUpdateAccept
from perund.channel.machine import transition
from perund.channel.types import ETH, Signature
from perund.session.virtual_disputes import _parent_state
from tests.channel.factories import as_input
from tests.channel.test_virtual import locked_pair
from tests.channel.virtual_factories import ALICE, CAROL, ETHER, INGRID, make_hub


def test_a_lock_is_registered_through_the_ledger_state_the_chain_takes() -> None:
    hub = make_hub()
    la_a, la_i, _, _ = locked_pair(hub)
    locked = la_a.current
    assert locked is not None and locked.state.locked
    vid = hub.v_alice.channel_id
    paid, sent = transition(la_a, OwnUpdate(ALICE, ((ETH, ETHER),)))
    update = sent[-1]
    assert isinstance(update, SendUpdate) and paid.staged is not None
    _, answer = transition(la_i, as_input(update, ALICE, INGRID))
    accept = answer[1]
    assert isinstance(accept, SendUpdateAccept)

    honest, _ = transition(paid, UpdateAcceptReceived(INGRID.address, la_a.channel_id,
                                                      accept.version, accept.signature))
    assert honest.checked == locked and honest.current is not None
    assert _parent_state(honest, vid) == (honest.current.state, honest.current.signatures)

    forged = Signature(CAROL.sign_digest(paid.staged.digest))
    lied, _ = transition(paid, UpdateAcceptReceived(INGRID.address, la_a.channel_id,
                                                    accept.version, forged))
    assert lied.checked == locked
    assert _parent_state(lied, vid) == (locked.state, locked.signatures)
