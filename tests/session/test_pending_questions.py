"""Questions waiting for the user outlast a restart as `GoneNotice`s (issue #13, point 4).

alice's channels live in a store that outlasts her client: she is asked (a proposal and a
payment request from bob), her client stops before she answers, and a new client on the same
store and keys tells her what became of both.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from perund.channel.phases import Phase
from perund.channel.proposal import Deployment, OpenRequest
from perund.channel.types import ETH, Address, ChannelID
from perund.errors import FailedPrecondition, PeerRejected
from perund.session.client import ChannelClient
from perund.session.notices import GoneNotice, Notice, ProposalNotice, UpdateNotice
from perund.session.pending import PREFIX, QuestionRecords
from perund.storage import MemoryStore

from .conftest import ETHER, Pair, User, listening_pair


def test_records_are_written_settled_and_read_back_once() -> None:
    store = MemoryStore()
    records = QuestionRecords(store)
    peer, channel = Address(b"\x01" * 20), ChannelID(b"\x02" * 32)
    records.asked("update", b"\xaa" * 32, peer, channel, 20.0)
    records.asked("proposal", b"\xbb" * 32, peer, None, 10.0)
    records.asked("proposal", b"\xcc" * 32, peer, None, 30.0)
    records.settled(b"\xcc" * 32)
    store.set_meta(PREFIX + "zz", b"not json")
    store.set_meta(PREFIX + "dd" * 32, json.dumps(
        {"kind": "update", "peer": "01" * 20, "channelId": None, "expiry": 1}).encode())

    gone = records.left_over()

    assert [(q.kind, q.question_id, q.channel_id) for q in gone] == [
        ("proposal", b"\xbb" * 32, None), ("update", b"\xaa" * 32, channel)]
    assert store.metas(PREFIX) == {}  # read once: the unreadable ones are dropped too
    assert records.left_over() == []


def _restart(user: User, store: MemoryStore) -> tuple[ChannelClient, list[Notice]]:
    """A new client with `user`'s keys, peer links and store, as after a node restart."""
    old = user.client
    told: list[Notice] = []
    client = ChannelClient(
        reactor, signer=old.signer, receiver=old.receiver, peers=user.peers,
        deployment=Deployment(old.deployment.chain_id, old.deployment.adjudicator,
                              min_challenge_duration=1),
        store=store, funder=old.funder, settler=old.settler, is_contact=old.is_contact,
        response_timeout=5.0, request_timeout=5.0)
    client.observers.append(told.append)
    client.restore()
    return client, told


@pytest_twisted.ensureDeferred
async def test_questions_a_stop_ended_are_rejected_to_the_peer_and_told_after_restart(
        chain: object) -> None:
    store = MemoryStore()
    pair: Pair = await listening_pair(chain, alice_store=store)
    alice, bob = pair.alice, pair.bob
    try:
        # bob opens a channel to alice; she accepts.
        opening = bob.client.open_channel(OpenRequest(alice.client.address, (ETH,),
                                                      ((ETHER, ETHER),), 60))
        proposal = await alice.proposal()
        assert isinstance(proposal, ProposalNotice)
        await alice.client.respond_proposal(proposal.proposal.proposal_id, True)
        cid = (await opening).channel_id

        # Then bob asks twice: a payment request and a second channel. alice does not answer.
        requesting = bob.client.send(cid, ((ETH, -1000),))
        question = await alice.update_question()
        assert isinstance(question, UpdateNotice)
        second = bob.client.open_channel(OpenRequest(alice.client.address, (ETH,),
                                                     ((ETHER, 0),), 60))
        proposal = await alice.proposal()
        assert isinstance(proposal, ProposalNotice)
        assert len(store.metas(PREFIX)) == 2

        alice.client.stop()

        # bob is told at once, not at the expiry.
        with pytest.raises(PeerRejected, match="stopped before its user answered"):
            await second
        with pytest.raises(PeerRejected):
            await requesting

        client, told = _restart(alice, store)
        gone = [n for n in told if isinstance(n, GoneNotice)]
        assert sorted((n.kind, n.question_id) for n in gone) == sorted([
            ("proposal", proposal.proposal.proposal_id), ("update", question.update_id)])
        update_gone = next(n for n in gone if n.kind == "update")
        assert update_gone.channel is not None and update_gone.channel.channel_id == cid
        assert all(n.peer == bob.client.address and "before its user answered" in n.reason
                   for n in gone)
        assert store.metas(PREFIX) == {}

        # A late answer learns why the question is gone, also from the API's look at the
        # deposits before it accepts (found by an audit: that said 201 "no such proposal").
        with pytest.raises(FailedPrecondition, match="proposal is gone: the node restarted"):
            client.proposed_deposits(proposal.proposal.proposal_id)
        with pytest.raises(FailedPrecondition, match="proposal is gone: the node restarted"):
            await client.respond_proposal(proposal.proposal.proposal_id, True)
        with pytest.raises(FailedPrecondition, match="update is gone"):
            await client.respond_update(cid, question.update_id, True)

        # The channel itself goes on once the restarted alice has bob's Sync (her restore
        # closed the link so that it comes back as a new one): bob pays her.
        for _ in range(200):
            if not client.channels[cid].resyncing:
                break
            await deferLater(reactor, 0.02)
        assert not client.channels[cid].resyncing
        paid = await bob.client.send(cid, ((ETH, 7),))
        assert paid.current is not None and paid.current.state.balances == (
            (ETHER - 7, ETHER + 7),)
        assert client.channels[cid].phase is Phase.OPEN
        client.stop()
    finally:
        await alice.peers.stop()
        await bob.peers.stop()
