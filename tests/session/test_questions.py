"""Questions for the user in memory, on a fake clock: a peer's proposal and a peer's payment
request wait for the user's answer until their expiry; then the peer is told no, and a late
answer learns it came too late."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from perund.channel.proposal import OpenRequest
from perund.channel.types import ETH
from perund.errors import PeerRejected, ResourceNotFound, UserResponseTimedOut
from perund.session.notices import ProposalNotice, UpdateNotice
from perund.session.pending import PREFIX
from perund.storage import MemoryStore

from .fakes import ETHER, Net, open_channel, result, side


def test_a_proposal_unanswered_until_its_expiry_is_rejected() -> None:
    clock = Clock()
    net = Net(clock)
    store = MemoryStore()
    alice, bob = side(net), side(net, store=store, response_timeout=5.0)
    opening = alice.client.open_channel(OpenRequest(bob.address, (ETH,), ((ETHER, 0),), 60))
    clock.advance(0)
    [notice] = bob.told(ProposalNotice)
    assert isinstance(notice, ProposalNotice) and notice.expiry == 5.0
    assert len(store.metas(PREFIX)) == 1  # recorded while it waits

    clock.advance(4.9)
    assert not opening.called
    clock.advance(0.1)

    with pytest.raises(PeerRejected, match="did not answer in time"):
        result(opening)
    assert store.metas(PREFIX) == {}
    with pytest.raises(UserResponseTimedOut):
        result(bob.client.respond_proposal(notice.proposal.proposal_id, True))
    with pytest.raises(ResourceNotFound):
        result(bob.client.respond_proposal(b"\x02" * 32, True))


def test_a_payment_request_unanswered_until_its_expiry_is_declined() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net), side(net, response_timeout=5.0)
    cid = open_channel(net, alice, bob, ours=ETHER, theirs=ETHER)
    asked_at = clock.seconds()
    requesting = alice.client.send(cid, ((ETH, -1),))
    clock.advance(0)
    [question] = bob.told(UpdateNotice)
    assert isinstance(question, UpdateNotice) and question.expiry == asked_at + 5.0

    clock.advance(5.0)

    with pytest.raises(PeerRejected, match="did not answer in time"):
        result(requesting)
    with pytest.raises(UserResponseTimedOut):
        result(bob.client.respond_update(cid, question.update_id, True))
    assert alice.client.channels[cid].version == bob.client.channels[cid].version == 0
    # The channel goes on.
    paid = alice.client.send(cid, ((ETH, 3),))
    clock.advance(0)
    assert result(paid).latest.balances == ((ETHER - 3, ETHER + 3),)


def test_an_answer_in_time_counts() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net), side(net, response_timeout=5.0)
    cid = open_channel(net, alice, bob, ours=ETHER, theirs=ETHER)
    requesting = alice.client.send(cid, ((ETH, -1),))
    clock.advance(4.0)
    [question] = bob.told(UpdateNotice)
    assert isinstance(question, UpdateNotice)
    answered = bob.client.respond_update(cid, question.update_id, True)
    clock.advance(0)

    assert result(answered).latest.balances == ((ETHER + 1, ETHER - 1),)
    assert result(requesting).version == 1
    clock.advance(10.0)  # its expiry passes: nothing happens any more
    assert bob.client.channels[cid].version == 1
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("accept", [True, False], ids=["accepted", "rejected"])
def test_a_proposal_replayed_after_its_answer_is_not_asked_again(accept: bool) -> None:
    """A duplicate or a replay of a proposal the user answered is dropped: it would otherwise
    be put to the user as a new question (the virtual-channel review's finding, for both
    kinds of proposal)."""
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net), side(net)
    opening = alice.client.open_channel(OpenRequest(bob.address, (ETH,), ((ETHER, 0),), 60))
    clock.advance(0)
    [notice] = bob.told(ProposalNotice)
    assert isinstance(notice, ProposalNotice)
    bob.client.respond_proposal(notice.proposal.proposal_id, accept)
    clock.advance(0)
    clock.advance(0)
    bob.links.arrive(alice.address, notice.proposal)
    clock.advance(0)
    assert len(bob.told(ProposalNotice)) == 1
    assert bob.links.refusals == [alice.address]
    if not accept:
        with pytest.raises(PeerRejected):
            result(opening)
