"""Two channel clients over loopback TCP, funding and settling on one embedded dev chain."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from perund.chain.account import Account
from perund.chain.backend import ChainBackend
from perund.channel.encoding import Signer
from perund.channel.phases import Phase
from perund.channel.proposal import Deployment, OpenRequest
from perund.channel.types import ETH, Address, ChannelID
from perund.peer.admission import PeerLimits
from perund.peer.manager import PeerManager
from perund.session.client import ChannelClient
from perund.session.notices import Notice, ProposalNotice, UpdateNotice
from perund.session.onchain import ChainSettlement
from perund.storage import ChannelStore, MemoryStore

ETHER = 10**18


@dataclass
class User:
    """One side: its client, keys and what it was told."""

    name: str
    client: ChannelClient
    account: Account
    peers: PeerManager
    notices: list[Notice] = field(default_factory=list)
    waiting: list[tuple[Callable[[Notice], bool], Deferred[Notice]]] = field(default_factory=list)

    def observe(self, notice: Notice) -> None:
        for entry in list(self.waiting):
            matches, d = entry
            if matches(notice):
                self.waiting.remove(entry)
                d.callback(notice)
                return
        self.notices.append(notice)

    def next_notice(self, matches: Callable[[Notice], bool]) -> Deferred[Notice]:
        """The first notice (already seen or still to come) that `matches`."""
        for notice in self.notices:
            if matches(notice):
                self.notices.remove(notice)
                d: Deferred[Notice] = Deferred()
                d.callback(notice)
                return d
        d = Deferred()
        self.waiting.append((matches, d))
        return d

    def proposal(self) -> Deferred[Notice]:
        return self.next_notice(lambda n: isinstance(n, ProposalNotice))

    def update_question(self) -> Deferred[Notice]:
        return self.next_notice(lambda n: isinstance(n, UpdateNotice))


@dataclass
class Pair:
    alice: User
    bob: User
    chain: ChainBackend


def make_user(name: str, chain: ChainBackend, dev_index: int,
              resolve: Callable[[Address], str | None], contacts: set[Address],
              store: ChannelStore | None = None, signer: Signer | None = None,
              **client_options: object) -> User:
    assert chain.chain_id is not None and chain.adjudicator is not None
    signer = signer or Signer(os.urandom(32))
    account = Account(chain.dev_private_keys()[dev_index])
    # Every refusal is logged: the hostile-peer tests read each one's reason there.
    peers = PeerManager(reactor, signer, resolve, "tcp:0:interface=127.0.0.1", dial_timeout=5.0,
                        keepalive_interval=None, limits=PeerLimits(logged_refusals=1000))
    deployment = Deployment(chain.chain_id, chain.adjudicator, min_challenge_duration=1)
    settlement = ChainSettlement(reactor, chain, account, poll_interval=0.05, funding_timeout=5.0,
                                 conclude_grace=0.5)
    options: dict[str, object] = {"response_timeout": 5.0, "request_timeout": 5.0}
    options.update(client_options)
    client = ChannelClient(
        reactor, signer=signer, receiver=account.address, peers=peers, deployment=deployment,
        store=store or MemoryStore(), funder=settlement, settler=settlement,
        is_contact=lambda address: address in contacts, **options,  # type: ignore[arg-type]
    )
    user = User(name, client, account, peers)
    client.observers.append(user.observe)
    return user


async def open_between(proposer: User, responder: User, ours: int, theirs: int,
                       challenge: int = 60) -> ChannelID:
    """Open a one-asset (ETH) channel on-chain, the responder's user accepting; its ID, once
    both sides see it open."""
    request = OpenRequest(responder.client.address, (ETH,), ((ours, theirs),), challenge)
    opening = proposer.client.open_channel(request)
    notice = await responder.proposal()
    assert isinstance(notice, ProposalNotice)
    assert notice.peer == proposer.client.address
    accepted = await responder.client.respond_proposal(notice.proposal.proposal_id, True)
    channel = await opening
    assert accepted is not None and accepted.channel_id == channel.channel_id
    assert channel.phase is Phase.OPEN and accepted.phase is Phase.OPEN
    return channel.channel_id


@pytest_twisted.async_yield_fixture
async def chain() -> AsyncIterator[ChainBackend]:
    backend = ChainBackend(reactor, url="", chain_id=4242, receipt_poll_interval=0.01)
    backend.startService()
    await backend.connect()
    yield backend
    backend.stopService()


async def listening_pair(chain: ChainBackend, alice_store: ChannelStore | None = None,
                         bob_store: ChannelStore | None = None) -> Pair:
    """alice and bob, contacts of each other, listening on loopback (their channels in
    `alice_store` and `bob_store`, else in memory); stop their `peers` afterwards."""
    endpoints: dict[Address, str] = {}
    contacts: set[Address] = set()
    alice = make_user("alice", chain, 1, endpoints.get, contacts, store=alice_store)
    bob = make_user("bob", chain, 2, endpoints.get, contacts, store=bob_store)
    for user in (alice, bob):
        port = await user.peers.listen()
        endpoints[user.client.address] = f"tcp:host=127.0.0.1:port={port}"
        contacts.add(user.client.address)
    return Pair(alice, bob, chain)


@pytest_twisted.async_yield_fixture
async def pair(chain: ChainBackend) -> AsyncIterator[Pair]:
    both = await listening_pair(chain)
    yield both
    await both.alice.peers.stop()
    await both.bob.peers.stop()
