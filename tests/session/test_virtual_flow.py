"""Virtual channels between three loopback clients on the embedded dev chain: alice and carol
each with a ledger channel to ingrid, a virtual channel alice-carol opened, used and closed
with no transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest_twisted

from perund.chain.backend import ChainBackend
from perund.channel import events as ev
from perund.channel.phases import Phase
from perund.channel.types import ETH, Address, ChannelID
from perund.channel.virtual_opening import VirtualOpenRequest
from perund.session.config import IntermediaryConfig
from perund.session.notices import ChannelNotice, ProposalNotice

from .conftest import ETHER, User, make_user, open_between


@dataclass
class Hub:
    alice: User
    ingrid: User
    carol: User
    la: ChannelID
    lc: ChannelID


async def three_users(chain: ChainBackend, window: float = 3.0) -> tuple[User, User, User]:
    endpoints: dict[Address, str] = {}
    contacts: set[Address] = set()
    alice = make_user("alice", chain, 1, endpoints.get, contacts)
    ingrid = make_user("ingrid", chain, 2, endpoints.get, contacts,
                       intermediary=IntermediaryConfig(True, window))
    carol = make_user("carol", chain, 3, endpoints.get, contacts)
    for user in (alice, ingrid, carol):
        port = await user.peers.listen()
        endpoints[user.client.address] = f"tcp:host=127.0.0.1:port={port}"
        contacts.add(user.client.address)
    return alice, ingrid, carol


@pytest_twisted.async_yield_fixture
async def hub(chain: ChainBackend) -> AsyncIterator[Hub]:
    alice, ingrid, carol = await three_users(chain)
    la = await open_between(alice, ingrid, 10 * ETHER, 10 * ETHER)
    lc = await open_between(carol, ingrid, 10 * ETHER, 10 * ETHER)
    yield Hub(alice, ingrid, carol, la, lc)
    for user in (alice, ingrid, carol):
        user.client.stop()
        await user.peers.stop()


async def open_virtual(hub: Hub, ours: int = 3 * ETHER, theirs: int = 0) -> ChannelID:
    request = VirtualOpenRequest(hub.carol.client.address, hub.ingrid.client.address, (ETH,),
                                 ((ours, theirs),), 60)
    opening = hub.alice.client.open_channel(request)
    notice = await hub.carol.proposal()
    assert isinstance(notice, ProposalNotice)
    accepted = await hub.carol.client.respond_proposal(notice.proposal.proposal_id, True)
    channel = await opening
    assert accepted is not None and accepted.channel_id == channel.channel_id
    assert channel.phase is Phase.OPEN and accepted.phase is Phase.OPEN
    return channel.channel_id


async def carol_closed(hub: Hub, vid: ChannelID) -> None:
    if hub.carol.client.channels[vid].phase is not Phase.CLOSED:
        await hub.carol.next_notice(lambda n: isinstance(n, ChannelNotice) and isinstance(
            n.event, ev.Closed) and n.event.channel_id == vid)


@pytest_twisted.ensureDeferred
async def test_open_pay_and_close_a_virtual_channel_with_no_transaction(hub: Hub) -> None:
    chain_txs = [len(u.client.settler.receipts) for u in (hub.alice, hub.ingrid, hub.carol)]  # type: ignore[attr-defined]
    vid = await open_virtual(hub)
    la_alice = hub.alice.client.channels[hub.la]
    assert la_alice.latest.balances == ((7 * ETHER, 10 * ETHER),)
    assert [lock.channel_id for lock in la_alice.latest.locked] == [vid]
    assert hub.carol.client.channels[hub.lc].latest.locked[0].balances == (3 * ETHER,)
    assert vid not in hub.ingrid.client.channels
    for _ in range(5):
        await hub.alice.client.send(vid, ((ETH, ETHER // 10),))
    closing = hub.alice.client.close(vid)
    question = await hub.carol.update_question()
    await hub.carol.client.respond_update(vid, question.update_id, True)  # type: ignore[attr-defined]
    closed = await closing
    assert closed.phase is Phase.CLOSED
    await carol_closed(hub, vid)
    # Folded: alice paid carol 0.5 ETH through the hub, ingrid is where she started.
    assert hub.alice.client.channels[hub.la].latest.balances == ((95 * ETHER // 10,
                                                                  105 * ETHER // 10),)
    assert not hub.alice.client.channels[hub.la].latest.locked
    assert hub.carol.client.channels[hub.lc].latest.balances == ((105 * ETHER // 10,
                                                                  95 * ETHER // 10),)
    ingrid = hub.ingrid.client.channels
    assert ingrid[hub.la].latest == hub.alice.client.channels[hub.la].latest
    assert ingrid[hub.lc].latest == hub.carol.client.channels[hub.lc].latest
    assert [len(u.client.settler.receipts) for u in (hub.alice, hub.ingrid, hub.carol)] \
        == chain_txs  # type: ignore[attr-defined]
