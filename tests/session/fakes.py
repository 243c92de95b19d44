"""Channel clients in memory, on a fake clock: in-memory doubles of the client's own ports
(`perund.session.ports`) and a `twisted.internet.task.Clock`.

`Net` links clients by address: a message is delivered `latency` seconds of the clock after it
was sent (0: at the next `clock.advance`, never inside the send; `clock.advance(0)` runs
everything due until all is quiet); requests time out on the clock; a test takes a peer off the
net (`net.cut(address)`) and brings it back (`net.mend(address)`), or cuts one link (`net.sever`,
`net.heal`). `Chain` funds at once and
records the settlement transactions asked for. Nothing here stands in for the real TCP path or
the chain: those keep their own tests (tests/peer, tests/chain, and the loopback tests here).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from perund.channel import events as ev
from perund.channel.changes import Concluded
from perund.channel.encoding import Signer
from perund.channel.phases import Phase
from perund.channel.proposal import Deployment, OpenRequest
from perund.channel.types import ETH, Address, ChannelID
from perund.errors import PeerDisconnected, PeerRequestTimedOut, PeerUnreachable, PerundError
from perund.peer.manager import undelivered
from perund.peer.records import PeerManagerOwner
from perund.session.client import ChannelClient
from perund.session.notices import Notice, ProposalNotice
from perund.session.virtual_onchain import ConcludeParent, RegisterVirtual
from perund.storage import ChannelStore, MemoryStore
from perund.wire.messages import (
    CorrelationKey,
    Message,
    Ping,
    Pong,
    request_key,
    response_key,
)

T = TypeVar("T")

ETHER = 10**18
Settlement = ev.Register | ev.ConcludeFinal | ev.Conclude | RegisterVirtual | ConcludeParent
"""A settlement transaction a client asks its chain for."""
DEPLOYMENT = Deployment(1337, Address(b"\x01" * 20), min_challenge_duration=1)


def _cancelling(result: object, timer: DelayedCall) -> object:
    if timer.active():
        timer.cancel()
    return result


class Net:
    """Who can reach whom, and the messages under way, on one clock."""

    def __init__(self, clock: Clock, latency: float = 0.0) -> None:
        self.clock = clock
        self.latency = latency
        self.links: dict[Address, Links] = {}
        self.down: set[Address] = set()
        self.severed: set[frozenset[Address]] = set()

    def reachable(self, a: Address, b: Address) -> bool:
        return a in self.links and b in self.links and not self.down & {a, b} \
            and frozenset((a, b)) not in self.severed

    def sever(self, a: Address, b: Address) -> None:
        """The link between `a` and `b` drops, and neither reaches the other until `heal`."""
        self.severed.add(frozenset((a, b)))
        self.links[a].drop(b)
        self.links[b].drop(a)

    def heal(self, a: Address, b: Address) -> None:
        """`a` and `b` may reach each other again (as after `mend`)."""
        self.severed.discard(frozenset((a, b)))
        for links in list(self.links.values()):
            links.reconnect_kept()

    def cut(self, address: Address) -> None:
        """`address` leaves the net: its links drop, and nothing reaches it until `mend`."""
        self.down.add(address)
        for links in self.links.values():
            links.drop(address)
        self.links[address].drop_all()

    def mend(self, address: Address) -> None:
        """`address` is reachable again (links come up when someone sends or keeps them)."""
        self.down.discard(address)
        for links in list(self.links.values()):
            links.reconnect_kept()


@dataclass
class Links:
    """One client's peer links (a `PeerLinks`), in memory."""

    net: Net
    address: Address
    owner: PeerManagerOwner | None = None
    connected: set[Address] = field(default_factory=set)
    kept: set[Address] = field(default_factory=set)
    pending: dict[tuple[Address, CorrelationKey], Deferred[Message]] = field(
        default_factory=dict)
    sent: list[tuple[Address, Message]] = field(default_factory=list)
    refusals: list[Address] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.net.links[self.address] = self

    # -- PeerLinks ------------------------------------------------------------------------------

    def attach(self, owner: PeerManagerOwner) -> None:
        assert self.owner is None, "one owner at a time"
        self.owner = owner

    def detach(self, owner: PeerManagerOwner) -> None:
        if self.owner is owner:
            self.owner = None

    def send(self, peer: Address, msg: Message) -> Deferred[None]:
        if not self._connect(peer):
            return fail(PeerUnreachable("not on the net", peer=peer.hex()))
        self.sent.append((peer, msg))
        self.net.clock.callLater(self.net.latency, self.net.links[peer].arrive, self.address,
                                 msg)
        return succeed(None)

    def post(self, peer: Address, msg: Message) -> None:
        self.send(peer, msg).addErrback(undelivered)

    def request(self, peer: Address, msg: Message, timeout: float) -> Deferred[Message]:
        key = request_key(msg)
        assert key is not None
        answer: Deferred[Message] = Deferred()
        self.pending[(peer, key)] = answer
        timer = self.net.clock.callLater(timeout, self._settle, peer, key, PeerRequestTimedOut(
            "no answer in time", peer=peer.hex(), timeout=timeout))
        answer.addBoth(_cancelling, timer)
        self.send(peer, msg).addErrback(lambda failure: self._settle(peer, key, failure.value))
        return answer

    def ping(self, peer: Address, timeout: float) -> Deferred[None]:
        return self.request(peer, Ping(os.urandom(8)), timeout).addCallback(lambda _: None)

    def is_connected(self, peer: Address) -> bool:
        return peer in self.connected

    def keep_connected(self, peer: Address, keep: bool) -> None:
        if keep:
            self.kept.add(peer)
            self._connect(peer)
        else:
            self.kept.discard(peer)

    def disconnect(self, peer: Address) -> Deferred[None]:
        self.drop(peer)
        self.net.links[peer].drop(self.address)
        return succeed(None)

    def refused(self, peer: Address) -> bool:
        self.refusals.append(peer)
        return True

    # -- the net's side -------------------------------------------------------------------------

    def arrive(self, sender: Address, msg: Message) -> None:
        if sender not in self.connected:
            return  # lost with the link it was sent on
        if isinstance(msg, Ping):
            self.send(sender, Pong(msg.nonce))
            return
        key = response_key(msg)
        waiting = self.pending.get((sender, key)) if key is not None else None
        if waiting is not None and key is not None:
            self._settle(sender, key, msg)
        elif self.owner is not None:
            self.owner.message_received(sender, msg)

    def drop(self, peer: Address) -> None:
        """The link to `peer` is gone: what waits on it fails."""
        if peer not in self.connected:
            return
        self.connected.discard(peer)
        for (to, key) in [k for k in self.pending if k[0] == peer]:
            self._settle(to, key, PeerDisconnected("the link dropped", peer=peer.hex(),
                                                   timeout=None))
        if self.owner is not None:
            self.owner.peer_disconnected(peer)

    def drop_all(self) -> None:
        for peer in list(self.connected):
            self.drop(peer)

    def reconnect_kept(self) -> None:
        for peer in list(self.kept):
            self._connect(peer)

    def _connect(self, peer: Address) -> bool:
        """Make sure a link to `peer` is up (both sides told, as after a handshake)."""
        if peer in self.connected:
            return True
        if not self.net.reachable(self.address, peer):
            return False
        other = self.net.links[peer]
        self.connected.add(peer)
        other.connected.add(self.address)
        for side, about in ((self, peer), (other, self.address)):
            if side.owner is not None:
                side.owner.peer_connected(about)
        return True

    def _settle(self, peer: Address, key: CorrelationKey,
                result: Message | PerundError | BaseException) -> None:
        answer = self.pending.pop((peer, key), None)
        if answer is None:
            return
        if isinstance(result, BaseException):
            answer.errback(result)
        else:
            answer.callback(result)


@dataclass
class Chain:
    """Funds at once (or, with `funds=False`, when the test says: `funding`); records every
    settlement transaction asked for and answers it with `conclusion` (None: a registration,
    the dispute goes on)."""

    clock: Clock | None = None
    """When set, `asked_at` records the clock's time of each settlement transaction."""
    funds: bool = True
    asked_at: list[float] = field(default_factory=list)
    asked: list[Settlement] = field(default_factory=list)
    failures: list[PerundError] = field(default_factory=list)
    """Errors the next settlement transactions fail with, in order."""
    conclusion: Callable[[Settlement], Concluded | None] = (lambda event: None)

    funding: list[Deferred[None]] = field(default_factory=list)
    """The funding waits handed out while `funds` is False, for the test to end."""
    cancelled: list[ChannelID] = field(default_factory=list)
    """The channels whose funding wait was cancelled."""

    def fund(self, event: ev.Fund) -> Deferred[None]:
        if self.funds:
            return succeed(None)
        self.funding.append(Deferred(lambda _: self.cancelled.append(event.channel_id)))
        return self.funding[-1]

    def _settle(self, event: Settlement) -> Deferred[Concluded | None]:
        self.asked.append(event)
        if self.clock is not None:
            self.asked_at.append(self.clock.seconds())
        if self.failures:
            return fail(self.failures.pop(0))
        return succeed(self.conclusion(event))

    def register(self, event: ev.Register) -> Deferred[Concluded | None]:
        return self._settle(event)

    def conclude_final(self, event: ev.ConcludeFinal) -> Deferred[Concluded | None]:
        return self._settle(event)

    def conclude(self, event: ev.Conclude) -> Deferred[Concluded | None]:
        return self._settle(event)

    def register_virtual(self, event: RegisterVirtual) -> Deferred[Concluded | None]:
        return self._settle(event)

    def conclude_parent(self, event: ConcludeParent) -> Deferred[Concluded | None]:
        return self._settle(event)


@dataclass
class Side:
    """One client in memory, with what it was told."""

    client: ChannelClient
    links: Links
    chain: Chain
    notices: list[Notice] = field(default_factory=list)

    @property
    def address(self) -> Address:
        return self.client.address

    def told(self, kind: type) -> list[Notice]:
        """The notices of type `kind`, oldest first."""
        return [n for n in self.notices if isinstance(n, kind)]


def side(net: Net, store: ChannelStore | None = None, chain: Chain | None = None,
         **options: object) -> Side:
    """A client on `net` whose contacts are everyone on the net."""
    signer = Signer(os.urandom(32))
    links = Links(net, signer.address)
    chain = chain or Chain(net.clock)
    # Pauses of the same lengths on every run, different for each client on the net.
    options.setdefault("rng", random.Random(len(net.links)))
    client = ChannelClient(
        net.clock, signer=signer, receiver=Address(os.urandom(20)), peers=links,
        deployment=DEPLOYMENT, store=store or MemoryStore(), funder=chain, settler=chain,
        is_contact=lambda address: address in net.links, **options,  # type: ignore[arg-type]
    )
    one = Side(client, links, chain)
    client.observers.append(one.notices.append)
    return one


def restart(net: Net, user: Side, store: ChannelStore | None = None,
            **options: object) -> None:
    """`user`'s node crashes and starts again: off the net, its client stopped, a new client
    (with `options`) on the same keys and store (a MemoryStore keeps every write, as the data
    file does for a killed process; `store`: a store opened again instead) restored in its
    place; back on the net once the caller mends it."""
    old = user.client
    net.cut(user.address)
    old.stop()
    options.setdefault("rng", random.Random(list(net.links).index(user.address) + 1))
    user.links = Links(net, user.address)
    user.client = ChannelClient(
        net.clock, signer=old.signer, receiver=old.receiver, peers=user.links,
        deployment=DEPLOYMENT, store=store or old.store, funder=user.chain, settler=user.chain,
        is_contact=lambda address: address in net.links, **options,  # type: ignore[arg-type]
    )
    user.client.observers.append(user.notices.append)
    user.client.restore()


def result(d: Deferred[T]) -> T:
    """What `d` fired with (a failure's exception is raised); it must have fired."""
    box: list[T | Failure] = []
    d.addBoth(box.append)
    assert box, "it has not fired"
    outcome = box[0]
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return outcome


def open_channel(net: Net, a: Side, b: Side, ours: int = 5 * ETHER,
                 theirs: int = 3 * ETHER) -> ChannelID:
    """`a` proposes a one-asset channel to `b`, whose user accepts; it is open on both sides
    (the net's latency set aside meanwhile)."""
    latency, net.latency = net.latency, 0.0
    try:
        opening = a.client.open_channel(OpenRequest(b.address, (ETH,), ((ours, theirs),), 60))
        net.clock.advance(0)
        proposal = b.told(ProposalNotice)[-1]
        assert isinstance(proposal, ProposalNotice)
        b.client.respond_proposal(proposal.proposal.proposal_id, True)
        net.clock.advance(0)
    finally:
        net.latency = latency
    channel = result(opening)
    assert channel.phase is Phase.OPEN
    cid = channel.channel_id
    assert b.client.channels[cid].phase is Phase.OPEN
    return cid


class MetaDict:
    """The small named values of a store (`MetaStore`), in a dict."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    def meta(self, name: str) -> bytes | None:
        return self.values.get(name)

    def set_meta(self, name: str, value: bytes) -> None:
        self.values[name] = value

    def delete_meta(self, name: str) -> None:
        self.values.pop(name, None)

    def metas(self, prefix: str) -> dict[str, bytes]:
        return {k: v for k, v in self.values.items() if k.startswith(prefix)}
