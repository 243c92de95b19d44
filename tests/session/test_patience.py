"""A session with `dispute_after` settles on-chain the channels of a peer that stays
unreachable that long (docs/specification.md §3: "past the user's patience"); a peer that
comes back in time, or a session without it, is left alone. In memory, on a fake clock: the
patience is looked at every quarter of it."""

from __future__ import annotations

from twisted.internet.task import Clock

from perund.channel import events as ev
from perund.channel.phases import Phase
from perund.channel.types import ETH, ChannelID

from .fakes import Net, Side, open_channel, side


def _paid_once(clock: Clock, net: Net, alice: Side, bob: Side) -> ChannelID:
    cid = open_channel(net, alice, bob)
    alice.client.send(cid, ((ETH, 1),))
    clock.advance(0)
    return cid


def test_a_peer_unreachable_past_the_patience_gets_its_channels_disputed() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net), side(net)
    cid = _paid_once(clock, net, alice, bob)
    second = open_channel(net, alice, bob)
    alice.client.watch_peers(4.0)
    clock.pump([1.0] * 6)  # bob is there: nothing happens
    assert alice.chain.asked == []

    net.cut(bob.address)  # between two looks: the first look that misses bob starts the clock
    clock.pump([1.0] * 4)
    assert alice.chain.asked == []
    assert alice.client.channels[cid].phase is Phase.OPEN
    clock.advance(1.0)  # the fifth look: four seconds since the first that missed bob

    assert [(type(e), e.channel_id, e.state.version) for e in alice.chain.asked
            if isinstance(e, ev.Register)] == [(ev.Register, cid, 1), (ev.Register, second, 0)]
    assert alice.client.channels[cid].phase is Phase.CLOSING
    clock.pump([1.0] * 20)
    assert len(alice.chain.asked) == 2  # once per channel


def test_a_peer_back_in_time_is_left_alone() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net), side(net)
    cid = _paid_once(clock, net, alice, bob)
    alice.client.watch_peers(4.0)
    net.cut(bob.address)
    clock.pump([1.0] * 3)
    net.mend(bob.address)  # alice keeps the link: it comes up again at once
    clock.pump([1.0] * 20)

    assert alice.chain.asked == []
    assert alice.client.channels[cid].phase is Phase.OPEN


def test_without_patience_nothing_is_disputed() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net), side(net)
    cid = _paid_once(clock, net, alice, bob)
    net.cut(bob.address)
    clock.pump([60.0] * 60)

    assert alice.chain.asked == []
    assert alice.client.channels[cid].phase is Phase.OPEN


def test_a_stopped_client_watches_no_more() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net, dispute_after=4.0), side(net)
    _paid_once(clock, net, alice, bob)
    alice.client.stop()
    net.cut(bob.address)
    clock.pump([1.0] * 20)

    assert alice.chain.asked == []
    assert clock.getDelayedCalls() == []
