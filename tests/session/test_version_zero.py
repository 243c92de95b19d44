"""A proposal we accepted whose proposer never countersigns version 0 (its node died before it
kept the channel) closes after the response and request timeouts, also after our restart;
before, the channel stayed `proposing` for ever and our user's answer never came (an audit)."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from perund.chain.backend import ChainBackend
from perund.channel import events as ev
from perund.channel.phases import Phase
from perund.channel.proposal import OpenRequest
from perund.channel.types import ETH, Address
from perund.errors import PeerRequestTimedOut
from perund.session.notices import ChannelNotice, ProposalNotice
from perund.storage import MemoryStore

from .conftest import ETHER, make_user


@pytest_twisted.ensureDeferred
async def test_an_accepted_proposal_whose_proposer_died_closes_unfunded(
        chain: ChainBackend) -> None:
    endpoints: dict[Address, str] = {}
    contacts: set[Address] = set()
    store = MemoryStore()
    options = {"response_timeout": 0.3, "request_timeout": 0.3}
    alice = make_user("alice", chain, 1, endpoints.get, contacts, store=store, **options)
    bob = make_user("bob", chain, 2, endpoints.get, contacts, **options)
    for user in (alice, bob):
        port = await user.peers.listen()
        endpoints[user.client.address] = f"tcp:host=127.0.0.1:port={port}"
        contacts.add(user.client.address)
    try:
        request = OpenRequest(alice.client.address, (ETH,), ((ETHER, ETHER),), 60)
        opening = bob.client.open_channel(request)
        opening.addErrback(lambda _: None)  # bob's node "dies" below
        notice = await alice.proposal()
        assert isinstance(notice, ProposalNotice)
        await bob.peers.stop()  # before alice's acceptance reaches him
        closed = alice.next_notice(
            lambda n: isinstance(n, ChannelNotice) and isinstance(n.event, ev.Closed))
        with pytest.raises(PeerRequestTimedOut, match="did not countersign version 0"):
            await alice.client.respond_proposal(notice.proposal.proposal_id, True).addTimeout(
                10, reactor)
        await closed
        (channel,) = alice.client.channels.values()
        assert channel.phase is Phase.CLOSED and channel.unfunded
        assert await chain.holdings(channel.channel_id) == (0, 0)  # nothing deposited
        assert list(store.channels()) == [channel]  # kept, closed

        # The same wait after a restart: the channel stored while proposing closes too.
        proposing = channel.evolve(phase=Phase.PROPOSING, unfunded=False)
        again = MemoryStore()
        again.put(proposing)
        restarted = make_user("alice", chain, 1, endpoints.get, contacts, store=again,
                              signer=alice.client.signer, **options)
        (resumed,) = restarted.client.restore()
        assert resumed.phase is Phase.PROPOSING
        await deferLater(reactor, 1.0, lambda: None)
        assert restarted.client.channels[channel.channel_id].phase is Phase.CLOSED
        restarted.client.stop()
    finally:
        await alice.peers.stop()
