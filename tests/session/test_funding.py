"""Funding a new channel in memory, on a fake clock: the user who opens it learns that it
opened, or why not (our deposit failed, the peer did not fund); a funding that no longer
matters is cancelled."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from perund.channel import events as ev
from perund.channel.changes import Concluded
from perund.channel.phases import Phase
from perund.channel.proposal import OpenRequest
from perund.channel.records import Channel
from perund.channel.types import ETH
from perund.errors import (
    ChainNotReachable,
    ChainRpcError,
    FailedPrecondition,
    InsufficientFunds,
    PeerNotFunded,
)
from perund.session.notices import ChannelNotice, ProposalNotice

from .fakes import ETHER, Chain, Net, Side, result, side


def _opening(clock: Clock, alice: Side, bob: Side) -> Deferred[Channel]:
    """alice proposes, bob's user accepts; alice's funding is left to the test."""
    opening = alice.client.open_channel(OpenRequest(bob.address, (ETH,), ((ETHER, ETHER),), 60))
    clock.advance(0)
    [proposal] = bob.told(ProposalNotice)
    assert isinstance(proposal, ProposalNotice)
    bob.client.respond_proposal(proposal.proposal.proposal_id, True)
    clock.advance(0)
    return opening


@pytest.mark.parametrize(("error", "told"), [
    (InsufficientFunds("no funds for the deposit", txType="deposit"), InsufficientFunds),
    (ChainNotReachable("the chain at http://127.0.0.1:1 is not reachable"), ChainNotReachable),
    (ChainRpcError("eth_sendRawTransaction", -32000, "nonce too low"), FailedPrecondition),
    (PeerNotFunded("the peer did not fund in time", peer="0x00"), PeerNotFunded),
], ids=["our-deposit-unpaid", "chain-down", "chain-refused", "peer-did-not-fund"])
def test_a_channel_not_funded_tells_its_opener_why(error: Exception, told: type) -> None:
    """Our own deposit's failure keeps the chain error's code (a chain outage is no mistake of
    the user's), with the channel and its own data; one without a code of its own is a
    failed precondition; the peer's is the peer's."""
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net, chain=Chain(clock, funds=False)), side(net)
    opening = _opening(clock, alice, bob)
    assert not opening.called

    alice.chain.funding[0].errback(error)
    clock.advance(0)

    with pytest.raises(told) as raised:
        result(opening)
    if told is not PeerNotFunded:
        assert type(raised.value) is told
        assert str(raised.value).startswith("our deposit failed: ")
        assert raised.value.data["channel_id"] == "0x" + next(iter(alice.client.channels)).hex()
        assert raised.value.data.items() >= error.data.items()
    [channel] = alice.client.channels.values()
    assert [(type(e), e.state.version) for e in alice.chain.asked] == [(ev.Register, 0)]
    assert channel.phase is not Phase.OPEN
    assert any(isinstance(n, ChannelNotice) and isinstance(n.event, ev.FundingFailed)
               for n in alice.notices)


def test_a_funding_that_no_longer_matters_is_cancelled() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net, chain=Chain(clock, funds=False)), side(net)
    opening = _opening(clock, alice, bob)
    [channel] = alice.client.channels.values()

    closing = alice.client.force_close(channel.channel_id)  # the user gives up on it
    clock.advance(0)

    assert alice.chain.cancelled == [channel.channel_id]
    assert [(type(e), e.state.version) for e in alice.chain.asked] == [(ev.Register, 0)]
    alice.client.chain_input(channel.channel_id, Concluded(0))
    assert result(closing).phase is Phase.CLOSED
    with pytest.raises(PeerNotFunded, match="closed before it opened"):
        result(opening)


def test_a_stop_cancels_the_funding() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net, chain=Chain(clock, funds=False)), side(net)
    _opening(clock, alice, bob)
    [channel] = alice.client.channels.values()
    alice.client.stop()

    assert alice.chain.cancelled == [channel.channel_id]
    assert alice.chain.asked == []
