"""Two real channel clients over loopback TCP: open, pay both ways, request, reject, close.

Funding and settlement go through the real chain backend on the embedded dev chain, so the
balances are checked to the wei. This is the integration layer: the client's behaviour in time
(batching, retries, expiry, patience) is tested in memory on a fake clock (tests/session/fakes.py).
"""

from __future__ import annotations

from typing import cast

import pytest
import pytest_twisted
from twisted.internet import reactor

from perund.channel import events as ev
from perund.channel.phases import Phase
from perund.channel.proposal import OpenRequest
from perund.channel.types import ETH
from perund.errors import InvalidArgument, PeerRejected, ResourceNotFound
from perund.session.notices import ChannelNotice, ProposalNotice, UpdateNotice
from perund.session.onchain import ChainSettlement

from .conftest import ETHER, Pair, open_between


async def open_channel(pair: Pair, ours: int = 5 * ETHER, theirs: int = 3 * ETHER,
                       challenge: int = 60) -> bytes:
    return await open_between(pair.alice, pair.bob, ours, theirs, challenge)


@pytest_twisted.ensureDeferred
async def test_open_pay_request_reject_close(pair: Pair) -> None:
    alice, bob, chain = pair.alice, pair.bob, pair.chain
    start = {u.name: await chain.balance(u.account.address) for u in (alice, bob)}
    cid = await open_channel(pair)
    assert await chain.holdings(cid) == (5 * ETHER, 3 * ETHER)

    # Payments both ways: incoming payments are accepted by the receiving node itself.
    channel = await alice.client.send(cid, ((ETH, ETHER),))
    assert channel.current is not None
    assert channel.current.state.balances == ((4 * ETHER, 4 * ETHER),)
    channel = await bob.client.send(cid, ((ETH, ETHER // 2),))
    assert channel.current is not None
    assert channel.current.state.balances == ((4 * ETHER + ETHER // 2, 3 * ETHER + ETHER // 2),)
    assert channel.current.state.version == 2

    # A payment request: bob's user is asked and accepts.
    requesting = alice.client.send(cid, ((ETH, -ETHER),))
    question = await bob.update_question()
    assert isinstance(question, UpdateNotice) and question.kind is ev.UpdateKind.REQUEST
    await bob.client.respond_update(cid, question.update_id, True)
    channel = await requesting
    assert channel.current is not None
    assert channel.current.state.balances == ((5 * ETHER + ETHER // 2, 2 * ETHER + ETHER // 2),)

    # Another request, rejected by bob's user: alice is told, nothing changes.
    requesting = alice.client.send(cid, ((ETH, -ETHER),))
    question = await bob.update_question()
    assert isinstance(question, UpdateNotice)
    await bob.client.respond_update(cid, question.update_id, False)
    with pytest.raises(PeerRejected):
        await requesting
    assert alice.client.channels[cid].version == 3
    assert bob.client.channels[cid].version == 3

    # Cooperative close: bob's user agrees to the final state; alice concludes on-chain.
    closing = alice.client.close(cid)
    question = await bob.update_question()
    assert isinstance(question, UpdateNotice) and question.kind is ev.UpdateKind.FINAL
    bob_closed = bob.next_notice(
        lambda n: isinstance(n, ChannelNotice) and isinstance(n.event, ev.Closed))
    await bob.client.respond_update(cid, question.update_id, True)
    closed = await closing
    await bob_closed
    assert closed.phase is Phase.CLOSED and bob.client.channels[cid].phase is Phase.CLOSED
    final = closed.latest
    # Version 4 was alice's refused request: she never signs a second state of it.
    assert final.is_final and final.version == 5

    # On-chain: each got its final balance minus the deposit and the gas it paid.
    end = {u.name: await chain.balance(u.account.address) for u in (alice, bob)}
    assert await chain.holdings(cid) == (0, 0)
    alice_gas = start["alice"] - 5 * ETHER + final.balances[0][0] - end["alice"]
    bob_gas = start["bob"] - 3 * ETHER + final.balances[0][1] - end["bob"]
    assert 0 < alice_gas < ETHER // 100 and 0 < bob_gas < ETHER // 100


@pytest_twisted.ensureDeferred
async def test_user_mistakes_are_clear_errors(pair: Pair) -> None:
    alice, bob = pair.alice, pair.bob
    cid = await open_channel(pair, ours=ETHER, theirs=0)
    with pytest.raises(InvalidArgument):
        await alice.client.send(cid, ((ETH, 2 * ETHER),))
    with pytest.raises(ResourceNotFound):
        await alice.client.send(b"\x00" * 32, ((ETH, 1),))
    with pytest.raises(ResourceNotFound):
        await bob.client.respond_update(cid, b"\x01" * 32, True)
    with pytest.raises(ResourceNotFound):
        await bob.client.respond_proposal(b"\x02" * 32, True)
    # A payment more than the balance fails alone, also when it waited behind others.
    first = alice.client.send(cid, ((ETH, 1),))
    too_much = alice.client.send(cid, ((ETH, ETHER),))
    third = alice.client.send(cid, ((ETH, 2),))
    await first
    with pytest.raises(InvalidArgument):
        await too_much
    assert (await third).latest.balances == ((ETHER - 3, 3),)


@pytest_twisted.ensureDeferred
async def test_rejected_proposal(pair: Pair) -> None:
    alice, bob = pair.alice, pair.bob
    request = OpenRequest(bob.client.address, (ETH,), ((ETHER, ETHER),), 60)
    opening = alice.client.open_channel(request)
    notice = await bob.proposal()
    assert isinstance(notice, ProposalNotice)
    assert await bob.client.respond_proposal(notice.proposal.proposal_id, False) is None
    with pytest.raises(PeerRejected):
        await opening
    assert alice.client.channels == {} and bob.client.channels == {}


@pytest_twisted.ensureDeferred
async def test_proposal_from_a_stranger_is_refused(pair: Pair, chain: object) -> None:
    alice, bob = pair.alice, pair.bob
    bob.client.is_contact = lambda address: False
    request = OpenRequest(bob.client.address, (ETH,), ((ETHER, 0),), 60)
    with pytest.raises(PeerRejected, match="not a contact"):
        await alice.client.open_channel(request)
    assert not bob.notices


@pytest_twisted.ensureDeferred
async def test_the_side_that_need_not_conclude_waits_for_the_conclusion_not_its_grace(
        pair: Pair) -> None:
    """bob did not propose the final update: he gives alice's concludeFinal a grace as long as
    a slow chain's two blocks, but seeing it mined ends his wait at a poll, and he sends no
    transaction of his own (one that reverts would cost him its gas)."""
    alice, bob = pair.alice, pair.bob
    cid = await open_channel(pair)
    settlement = cast(ChainSettlement, bob.client.settler)
    settlement.conclude_grace = 60.0
    sent_before = len(settlement.receipts)
    closing = alice.client.close(cid)
    question = await bob.update_question()
    bob_closed = bob.next_notice(
        lambda n: isinstance(n, ChannelNotice) and isinstance(n.event, ev.Closed))
    await bob.client.respond_update(cid, question.update_id, True)
    await closing
    await bob_closed.addTimeout(10, reactor)  # the poll, not the 60 s
    assert bob.client.channels[cid].phase is Phase.CLOSED
    assert len(settlement.receipts) == sent_before
