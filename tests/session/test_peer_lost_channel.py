"""A peer that lost a channel we hold nothing in (restored from a backup older than it) says
so with `ChannelClosed` on every connection. The channel stays open (only our state frees the
peer's deposits), and the message is not counted against the peer: an honest node that lost a
hundred such channels would otherwise be cut off at each connection (docs/protocol.md, "A
channel closed without the chain")."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from perund.channel.phases import Phase
from perund.wire.messages import ChannelClosed

from .fakes import Net, open_channel, side


def test_a_peer_saying_it_lost_a_channel_holding_only_its_money_is_not_counted() -> None:
    clock = Clock()
    net = Net(clock, latency=0.001)
    alice, bob = side(net), side(net)
    cid = open_channel(net, bob, alice, ours=3 * 10**18, theirs=0)  # alice has nothing in it
    with capturedLogs() as events:
        for _ in range(150):
            alice.links.arrive(bob.address, ChannelClosed(cid, "unknown channel"))
        clock.advance(0)
    assert alice.client.channels[cid].phase is Phase.OPEN
    assert alice.links.refusals == []
    lines = [formatEvent(e) for e in events if "holds nothing of ours" in formatEvent(e)]
    assert len(lines) == 150 and "stays open" in lines[0]
