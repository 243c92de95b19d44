"""A session with `dispute_after` settles on-chain the channels of a peer that stays
unreachable that long (PROTOCOL.md §3: "past the user's patience"); a peer that comes back in
time, or a session without it, is left alone."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from perund.chain.results import Phase as OnChainPhase
from perund.channel.phases import Phase
from perund.channel.types import ETH
from tests.session.conftest import Pair
from tests.session.test_two_clients import open_channel


@pytest_twisted.ensureDeferred
async def test_a_peer_unreachable_past_the_patience_gets_its_channels_disputed(
        pair: Pair) -> None:
    alice, bob, chain = pair.alice, pair.bob, pair.chain
    cid = await open_channel(pair)
    await alice.client.send(cid, ((ETH, 1),))
    alice.client.watch_peers(0.4)
    await deferLater(reactor, 0.6)  # bob is there: nothing happens
    assert alice.client.channels[cid].phase is Phase.OPEN
    await bob.peers.stop()  # bob's node is gone
    for _ in range(200):
        if (await chain.channel_status(cid)).phase is OnChainPhase.DISPUTE:
            break
        await deferLater(reactor, 0.05)
    status = await chain.channel_status(cid)
    assert status.phase is OnChainPhase.DISPUTE and status.version == 1
    assert alice.client.channels[cid].phase in (Phase.CLOSING, Phase.DISPUTED)
