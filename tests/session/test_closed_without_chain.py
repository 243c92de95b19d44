"""A proposer down past the responder's funding deadline gets its deposit back.

The responder, with nothing of its own in the channel (its share is 0), closes it at its
funding deadline without a transaction. An audit found, against real nodes, that a proposer
restarted after that deposited its share, saw every share held and took the channel for open:
its money sat in the contract, in a channel its peer held closed and nothing ever settled. Here
two real clients on the dev chain with the real Adjudicator: the responder gives up while the
proposer is down; back, the proposer deposits, connects, is told the channel is closed
(docs/protocol.md, "A channel closed without the chain"), registers version 0, and its
conclusion pays the whole deposit back to the proposer."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from perund.chain.account import Account
from perund.chain.backend import ChainBackend
from perund.chain.results import Phase as ChainPhase
from perund.channel import events as ev
from perund.channel.changes import ChallengeExpired, Registered, UpdateAcceptReceived
from perund.channel.encoding import Signer, random_share
from perund.channel.machine import transition
from perund.channel.phases import Phase
from perund.channel.proposal import (
    Deployment,
    OpenRequest,
    accept_proposal,
    complete_proposal,
    make_proposal,
)
from perund.channel.records import Channel
from perund.channel.types import ETH, Address
from perund.session.notices import ChannelNotice
from perund.session.onchain import ChainSettlement
from perund.storage import MemoryStore

from .conftest import ETHER, User, make_user

DEPOSIT = 2 * ETHER


def _funding_records(chain: ChainBackend, alice: Signer, alice_receiver: Address,
                     bob: Signer, bob_receiver: Address) -> tuple[Channel, Channel]:
    """Both sides' records of a channel alice funds alone, version 0 fully signed, as each
    node stored it before its funding: what a node restarted while funding resumes from."""
    assert chain.chain_id is not None and chain.adjudicator is not None
    deployment = Deployment(chain.chain_id, chain.adjudicator, min_challenge_duration=1)
    request = OpenRequest(bob.address, (ETH,), ((DEPOSIT, 0),), 60)
    proposal = make_proposal(request, participant=alice.address, receiver=alice_receiver,
                             proposal_id=random_share(), nonce_share=random_share(),
                             deployment=deployment)
    proposing, (_, accept) = accept_proposal(proposal, signer=bob, receiver=bob_receiver,
                                             nonce_share=random_share(), deployment=deployment)
    theirs, events = complete_proposal(proposal, accept,  # type: ignore[arg-type]
                                       sender=bob.address, peer=bob.address, signer=alice,
                                       deployment=deployment)
    assert theirs is not None and theirs.phase is Phase.FUNDING
    signed = next(e for e in events if isinstance(e, ev.SendUpdateAccept))
    ours, _ = transition(proposing, UpdateAcceptReceived(
        alice.address, signed.channel_id, signed.version, signed.signature))
    assert ours.phase is Phase.FUNDING
    return theirs, ours


def _closed(user: User):
    return user.next_notice(
        lambda n: isinstance(n, ChannelNotice) and isinstance(n.event, ev.Closed))


async def _until(test: Callable[[], bool], what: str) -> None:
    """Wait for `test()` to hold (a guard against hanging, not a timing claim)."""
    for _ in range(400):
        if test():
            return
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"never happened: {what}")


@pytest.mark.parametrize("bob_knows", [True, False], ids=["closed", "retired"])
@pytest_twisted.ensureDeferred
async def test_a_proposer_down_past_the_funding_deadline_gets_its_deposit_back(
        chain: ChainBackend, bob_knows: bool) -> None:
    """`retired`: bob's node no longer holds the channel at all when alice is back (retired
    after `limits.closed_channel_retention`, or lost): her Sync about a channel he does not know
    is answered the same way."""
    endpoints: dict[Address, str] = {}
    contacts: set[Address] = set()
    alice_signer, bob_signer = Signer(random_share()), Signer(random_share())
    alice_store, bob_store = MemoryStore(), MemoryStore()
    bob = make_user("bob", chain, 2, endpoints.get, contacts, store=bob_store, signer=bob_signer)
    alice_receiver = Account(chain.dev_private_keys()[1]).address
    alices, bobs = _funding_records(chain, alice_signer, alice_receiver, bob_signer,
                                    bob.account.address)
    cid = alices.channel_id
    alice_store.put(alices)
    bob_store.put(bobs)
    contacts.update({alice_signer.address, bob_signer.address})
    endpoints[bob.client.address] = f"tcp:host=127.0.0.1:port={await bob.peers.listen()}"
    alice: User | None = None
    try:
        # alice's node is down; bob's funding deadline passes: nothing of his to deposit, so
        # he closes without a transaction (his message to alice finds nobody).
        funder = bob.client.funder
        assert isinstance(funder, ChainSettlement)
        funder.funding_timeout = 0.3
        bob_closed = _closed(bob)
        bob.client.restore()
        await bob_closed
        assert bob.client.channels[cid].phase is Phase.CLOSED
        assert await chain.holdings(cid) == (0, 0)
        # bob's node goes down in turn (what it had still to send alice is gone with it).
        bob.client.stop()
        await bob.peers.stop()

        # alice comes back: she deposits her share and, bob's being 0, sees the channel open.
        alice = make_user("alice", chain, 1, endpoints.get, contacts, store=alice_store,
                          signer=alice_signer)
        endpoints[alice.client.address] = f"tcp:host=127.0.0.1:port={await alice.peers.listen()}"
        alice.client.restore()
        await _until(lambda: alice is not None and alice.client.channels[cid].phase
                     is not Phase.FUNDING, "alice's funding ends")
        assert await chain.holdings(cid) == (DEPOSIT, 0)
        assert alice.client.channels[cid].phase is Phase.OPEN

        # bob's node is back: his channel is closed, and a closed channel starts no sync; but
        # alice's Sync on the connection is answered with the close: she registers version 0.
        bob = make_user("bob", chain, 2, endpoints.get, contacts,
                        store=bob_store if bob_knows else MemoryStore(), signer=bob_signer)
        endpoints[bob.client.address] = f"tcp:host=127.0.0.1:port={await bob.peers.listen()}"
        bob.client.restore()
        await alice.peers.ping(bob.client.address, 5.0)
        await _until(lambda: alice is not None
                     and alice.client.channels[cid].phase is Phase.CLOSING,
                     "alice settles on-chain")
        status = None
        for _ in range(400):
            status = await chain.channel_status(cid)
            if status.phase is ChainPhase.DISPUTE:
                break
            await deferLater(reactor, 0.05, lambda: None)
        assert status is not None and status.phase is ChainPhase.DISPUTE
        assert status.version == 0

        # The challenge runs out (the watcher's news, fed as it would): her conclusion pays her
        # whole deposit back, and the contract holds nothing more.
        await chain.advance_time(61)
        alice_closed = _closed(alice)
        alice.client.chain_input(cid, Registered(0, status.timeout, False, ((DEPOSIT, 0),)))
        alice.client.chain_input(cid, ChallengeExpired())
        notice = await alice_closed.addTimeout(20, reactor)
        assert isinstance(notice, ChannelNotice) and isinstance(notice.event, ev.Closed)
        assert notice.event.paid == ((ETH, DEPOSIT),)
        assert alice.client.channels[cid].phase is Phase.CLOSED
        assert await chain.holdings(cid) == (0, 0)
        assert cid not in bob.client.channels or bob.client.channels[cid].phase is Phase.CLOSED
    finally:
        bob.client.stop()
        await bob.peers.stop()
        if alice is not None:
            alice.client.stop()
            await alice.peers.stop()
