"""A channel one side closed without the chain, while the other may still deposit.

The side with nothing of its own in a channel closes it at its funding deadline without a
transaction (a registration would cost it gas for nothing of its own). An audit found the other
side's money stuck: a proposer down past that deadline deposited once back, saw every share
held (the responder's was 0) and took the channel for open; nothing ever settled it. Now the
side that gives up tells the peer (`SendChannelClosed`), at once and in answer to its every
Sync, and the peer settles on-chain what it holds (docs/protocol.md, "A channel closed without
the chain"). These tests follow one order of events each, with the exact events."""

from __future__ import annotations

from perund.channel.changes import (
    ChannelClosedReceived,
    Funded,
    FundingExpired,
    Restored,
    StartSync,
)
from perund.channel.events import (
    Closed,
    Fund,
    FundingFailed,
    Opened,
    Persist,
    Reason,
    Refused,
    Register,
    SendChannelClosed,
    SendSync,
)
from perund.channel.lifecycle import FUNDING_LAPSED, PEER_CLOSED
from perund.channel.machine import transition
from perund.channel.phases import Phase
from perund.channel.records import SignedState
from perund.channel.syncing import CLOSED_HERE
from perund.channel.types import ChannelID, SubAlloc
from tests.channel.factories import (
    ALICE,
    BOB,
    ETHER,
    deliver,
    fully_signed_by_both,
    make_pair,
    make_request,
    next_state,
)

ALONE = make_request(balances=((10 * ETHER, 0),))
"""alice funds the channel alone: bob has nothing of his in it."""


def test_a_proposer_back_after_the_deadline_settles_what_it_deposited() -> None:
    """alice's node is down past bob's funding deadline: bob closes without the chain and
    tells her (the message is lost: she is down). Back, she deposits and sees every share held
    (bob's is 0): open. Her Sync on the new connection is answered with the close, and she
    registers version 0, whose conclusion gives her deposit back."""
    alice, bob = make_pair(ALONE, funded=False)
    bob, events = transition(bob, FundingExpired())
    assert bob.phase is Phase.CLOSED
    assert events == (Persist(bob), FundingFailed(bob.channel_id),
                      SendChannelClosed(ALICE.address, bob.channel_id, FUNDING_LAPSED),
                      Closed(bob.channel_id, 0, (), off_chain=FUNDING_LAPSED))

    alice, events = transition(alice, Restored())
    assert [type(e) for e in events] == [Fund]
    alice, events = transition(alice, Funded())
    assert alice.phase is Phase.OPEN and events == (Persist(alice), Opened(alice.channel_id))
    alice, (sync,) = transition(alice, StartSync())
    assert isinstance(sync, SendSync)

    same, events = deliver(bob, sync, ALICE, BOB)
    assert same is bob
    assert events == (SendChannelClosed(ALICE.address, bob.channel_id, CLOSED_HERE),)
    assert alice.current is not None
    settling, events = deliver(alice, events[0], BOB, ALICE)
    assert settling.phase is Phase.CLOSING and not settling.unfunded
    assert events == (Persist(settling), Register(alice.channel_id, alice.params,
                                                  alice.current.state, alice.current.signatures))
    # Told again (her Sync on the next connection): nothing more happens.
    again = SendChannelClosed(ALICE.address, bob.channel_id, CLOSED_HERE)
    assert deliver(settling, again, BOB, ALICE) == (settling, ())


def test_the_close_reaching_a_proposer_still_funding_fails_the_funding_and_registers() -> None:
    """alice is up, her deposit not mined yet at bob's deadline: his close reaches her while
    she funds. Her funding fails (the shell cancels it as she leaves funding) and she
    registers version 0: a deposit of hers mined before the conclusion is paid back by it, one
    mined after reverts (the contract takes no deposit on a concluded channel)."""
    alice, bob = make_pair(ALONE, funded=False)
    bob, (_, _, told, _) = transition(bob, FundingExpired())
    assert alice.current is not None
    settling, events = deliver(alice, told, BOB, ALICE)
    assert settling.phase is Phase.CLOSING and settling.unfunded
    assert events == (Persist(settling), FundingFailed(alice.channel_id),
                      Register(alice.channel_id, alice.params, alice.current.state,
                               alice.current.signatures))


def test_a_side_with_nothing_in_the_channel_closes_at_once_when_told() -> None:
    """Mirrored: alice proposed a channel only bob funds, and gave up at her deadline while
    bob was down. Told of it, bob registers; alice, told by bob of a close of his (he has her
    channel closed), has nothing of hers to get back and closes without the chain."""
    alice, bob = make_pair(make_request(balances=((0, 10 * ETHER),)), funded=False)
    alice_closed, events = transition(alice, FundingExpired())
    told = next(e for e in events if isinstance(e, SendChannelClosed))
    assert told.peer == BOB.address
    bob2, events = deliver(bob, told, ALICE, BOB)
    assert bob2.phase is Phase.CLOSING and isinstance(events[-1], Register)

    # alice still funding (her close message crossed his): his close closes hers at once.
    closed, events = deliver(alice, SendChannelClosed(ALICE.address, alice.channel_id, "x"),
                             BOB, ALICE)
    assert closed.phase is Phase.CLOSED and closed.unfunded
    assert events == (Persist(closed), FundingFailed(alice.channel_id),
                      Closed(alice.channel_id, 0, (), off_chain=PEER_CLOSED))
    assert alice_closed.phase is Phase.CLOSED


def test_only_the_peer_closes_and_only_a_live_channel() -> None:
    alice, _ = make_pair(ALONE)
    stranger = ChannelClosedReceived(ALICE.address, alice.channel_id, "closed")
    assert transition(alice, stranger) == (
        alice, (Refused(alice.channel_id, ALICE.address, Reason.NOT_PEER, ""),))
    closing, _ = deliver(alice, SendChannelClosed(ALICE.address, alice.channel_id, "closed"),
                         BOB, ALICE)
    assert closing.phase is Phase.CLOSING
    assert deliver(closing, SendChannelClosed(ALICE.address, alice.channel_id, "closed"),
                   BOB, ALICE) == (closing, ())


def test_an_open_channel_holding_nothing_of_ours_stays_open_when_told() -> None:
    """alice restored her node from a backup older than the channel she alone funded: she
    answers bob's Sync with `ChannelClosed` (she does not know it). Bob has nothing in it, and
    his state is the only one that frees her deposit: closing it without the chain would
    strand it for good (an audit). He refuses the message and keeps the channel open; his
    user may still close it (a dispute)."""
    _, bob = make_pair(ALONE)
    told = SendChannelClosed(BOB.address, bob.channel_id, "unknown channel")
    assert deliver(bob, told, ALICE, BOB) == (
        bob, (Refused(bob.channel_id, ALICE.address, Reason.HOLDS_NOTHING_OF_OURS, ""),))


def test_a_ledger_locking_a_virtual_channel_is_settled_on_chain_when_told() -> None:
    """bob's free balance in the ledger is 0, but it locks a virtual channel whose outcome may
    be his (he receives there). A `ChannelClosed` from his hub must not close the ledger at
    once (an audit: the hub then registered the ledger's version 0 unrefuted and kept the
    virtual channel's balance owed to bob): he registers his latest state, locks included."""
    _, bob = make_pair(ALONE)
    lock = SubAlloc(ChannelID(b"\x07" * 32), (ETHER,), (0, 1))
    state = next_state(bob, balances=((9 * ETHER, 0),), locked=(lock,))
    bob = bob.evolve(current=SignedState(state, fully_signed_by_both(state)))
    told = SendChannelClosed(BOB.address, bob.channel_id, "unknown channel")
    settling, events = deliver(bob, told, ALICE, BOB)
    assert settling.phase is Phase.CLOSING
    assert events == (Persist(settling), Register(bob.channel_id, bob.params, state,
                                                  fully_signed_by_both(state)))
