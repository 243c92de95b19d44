"""Crashes at every step of a payment and of a payment request, on either side (docs/protocol.md,
"Durability by interest").

Two channel clients in memory on a fake clock, each on a real session store. The victim dies
before its k-th action (an event its client executes, or a commit of its store) for every k
until the update is over: from then on it does nothing, its store loses what a crash loses (a
killed process: the writes not yet appended; a power loss: also what was appended but not
fsynced), what it sent is or is not delivered, and it restarts on the repaired store. Then both
sides must agree on one state at or above every state either user heard of, neither may ever
have signed two states of one version, each history must be its stored states, and payments
must go on both ways."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from perund.channel import events as ev
from perund.channel.encoding import Signer
from perund.channel.types import ETH, Address, ChannelID, State
from perund.errors import PerundError
from perund.session.client import ChannelClient
from perund.session.notices import ChannelNotice, Notice, UpdateNotice
from perund.storage.store import SessionStore

from .fakes import DEPLOYMENT, ETHER, Chain, Links, Net, Side, open_channel

AMOUNT = 1000


@pytest.fixture
def synced_sizes(monkeypatch: pytest.MonkeyPatch) -> dict[int, bytes]:
    """What each file (by inode) held at its last fsync: what a power loss keeps. Its content,
    not its size: the store writes its records over zeros the file holds already."""
    held: dict[int, bytes] = {}
    real = os.fsync

    def recording(fd: int) -> None:
        real(fd)
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):  # a directory's fsync keeps its entries
            held[info.st_ino] = os.pread(fd, info.st_size, 0)

    monkeypatch.setattr(os, "fsync", recording)
    return held


class Died(Exception):
    """Raised into nothing: the victim's next action does not happen."""


@dataclass
class Node:
    """One node across its incarnations: its keys, its store's place, what its user heard of
    and every signature that left it."""

    name: str
    net: Net
    path: Path
    signer: Signer = field(default_factory=lambda: Signer(os.urandom(32)))
    receiver: Address = field(default_factory=lambda: Address(os.urandom(20)))
    chain: Chain = field(default_factory=Chain)
    signed: dict[int, set[bytes]] = field(default_factory=dict)
    heard: list[int] = field(default_factory=list)
    benefits: list[int] = field(default_factory=list)
    """The versions its user heard of that raised one of its balances."""
    index: int = 0
    side: Side | None = None
    store: SessionStore | None = None
    actions: int = 0
    dies_at: int | None = None
    delivered: bool = True
    dead: bool = False
    on_question: Callable[[ChannelClient, UpdateNotice], None] | None = None
    _last_heard: dict[ChannelID, State] = field(default_factory=dict)

    @property
    def client(self) -> ChannelClient:
        assert self.side is not None
        return self.side.client

    def start(self, restore: bool) -> None:
        self.store = SessionStore(self.path, self.net.clock)
        links = Links(self.net, self.signer.address)
        client = ChannelClient(
            self.net.clock, signer=self.signer, receiver=self.receiver, peers=links,
            deployment=DEPLOYMENT, store=self.store, funder=self.chain, settler=self.chain,
            is_contact=lambda address: address in self.net.links)
        self.side = Side(client, links, self.chain)
        client.observers.append(self._observe)
        self.actions, self.dead = 0, False
        for kind, handler in list(client._handlers.items()):
            client._handlers[kind] = self._acting(kind, handler)
        commits = self.store._commits
        commits._commit = self._acting(None, commits._commit)  # type: ignore[method-assign]
        if restore:
            client.restore()

    def _observe(self, notice: Notice) -> None:
        assert self.side is not None
        self.side.notices.append(notice)
        if isinstance(notice, ChannelNotice) and isinstance(notice.event, ev.NewState):
            state = notice.event.state
            before = self._last_heard.get(state.channel_id)
            if before is not None and any(
                    row[self.index] > was[self.index]
                    for row, was in zip(state.balances, before.balances, strict=True)):
                self.benefits.append(state.version)
            self._last_heard[state.channel_id] = state
            self.heard.append(state.version)
        if isinstance(notice, UpdateNotice) and self.on_question is not None:
            self.on_question(self.client, notice)

    def _acting(self, kind: type | None, action: Callable[..., Any]) -> Callable[..., Any]:
        def act(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                return None
            if self.dies_at is not None and self.actions == self.dies_at:
                self.die()
                return None
            self.actions += 1
            if kind is ev.SendUpdate:
                self.sign(args[0].state.version, args[0].signature)
            elif kind is ev.SendUpdateAccept:
                self.sign(args[0].version, args[0].signature)
            return action(*args, **kwargs)
        return act

    def sign(self, version: int, signature: bytes) -> None:
        self.signed.setdefault(version, set()).add(signature)

    def die(self) -> None:
        """Stop acting at once, as a killed process does: nothing it receives is handled and
        it sends nothing more. What it sent arrives (`delivered`: a killed process's socket
        still delivers what it was given) or is lost with the connection. `crash` ends it."""
        if self.dead:
            return
        self.dead = True
        assert self.side is not None
        links = self.side.links
        links.owner = None
        links.send = lambda peer, msg: Deferred()  # type: ignore[method-assign]
        if not self.delivered:
            self.net.cut(self.signer.address)

    def crash(self, power_loss: bool, synced_sizes: dict[int, bytes]) -> None:
        """Lose what the crash loses: the writes not appended yet, and on a power loss also
        those appended since the last fsync."""
        self.die()
        assert self.store is not None
        store = self.store
        self.net.cut(self.signer.address)
        fd = store._file._db._data_fd
        inode = os.fstat(fd).st_ino
        commits = store._commits
        commits.pending.clear()
        for call in (commits._scheduled, commits._sync_timer):
            if call is not None and call.active():
                call.cancel()
        commits.closed = True
        os.close(fd)
        store._release()
        if power_loss:
            with open(store.data_path, "r+b") as f:
                f.write(synced_sizes[inode])
                f.truncate()

    def restart(self) -> None:
        self.start(restore=True)
        self.net.mend(self.signer.address)


@dataclass
class World:
    clock: Clock
    net: Net
    alice: Node
    bob: Node
    cid: ChannelID

    def settle(self, seconds: int = 200) -> None:
        for _ in range(seconds):
            self.clock.advance(1)

    def balances(self, node: Node) -> tuple[int, int]:
        channel = node.client.channels[self.cid]
        assert channel.current is not None
        row = channel.current.state.balances[0]
        return row[0], row[1]


def _world(tmp_path: Path) -> World:
    clock = Clock()
    net = Net(clock)
    alice = Node("alice", net, tmp_path / "alice", chain=Chain(clock))
    bob = Node("bob", net, tmp_path / "bob", chain=Chain(clock), index=1)
    alice.start(restore=False)
    bob.start(restore=False)
    assert alice.side is not None and bob.side is not None
    cid = open_channel(net, alice.side, bob.side)
    world = World(clock, net, alice, bob, cid)
    for node in (alice, bob):
        node._last_heard[cid] = node.client.channels[cid].latest
    # Some history first: a payment each way.
    for payer in (alice, bob):
        payer.client.send(cid, ((ETH, 7),))
        world.settle(2)
    return world


def _accept(client: ChannelClient, notice: UpdateNotice) -> None:
    assert notice.channel is not None
    client.respond_update(notice.channel.channel_id, notice.update_id, True).addErrback(
        lambda _: None)


def _reject(client: ChannelClient, notice: UpdateNotice) -> None:
    """No user expects a request after the crash: one would come from an update built on a
    state its proposer lost."""
    assert notice.channel is not None
    client.respond_update(notice.channel.channel_id, notice.update_id, False).addErrback(
        lambda _: None)


def _outcome(d: Deferred[Any]) -> list[object]:
    box: list[object] = []
    d.addBoth(box.append)
    return box


FLOWS = {
    # (who proposes, amount: > 0 pays the peer, < 0 requests from it)
    "payment": ("alice", AMOUNT),
    "request": ("bob", -AMOUNT),
}


def _run(tmp_path: Path, synced_sizes: dict[int, bytes], flow: str, victim: str, dies_at: int,
         power_loss: bool, delivered: bool, victim_first: bool) -> bool:
    """One crash; whether the victim died (False: the update was over before its action)."""
    world = _world(tmp_path)
    proposer_name, amount = FLOWS[flow]
    nodes = {"alice": world.alice, "bob": world.bob}
    proposer, other = nodes[proposer_name], nodes["bob" if proposer_name == "alice" else "alice"]
    other.on_question = _accept
    before = world.balances(world.alice)
    start_version = world.alice.client.channels[world.cid].version
    killed = nodes[victim]
    killed.actions, killed.dies_at, killed.delivered = 0, dies_at, delivered
    told_ok: list[int] = []

    def told(channel: Any) -> None:
        told_ok.append(channel.current.state.version)
        proposer.heard.append(channel.current.state.version)

    proposer.client.send(world.cid, ((ETH, amount),)).addCallbacks(
        told, lambda f: f.trap(PerundError))
    world.settle(3)
    if not killed.dead:
        return False
    killed.crash(power_loss, synced_sizes)
    killed.dies_at = None
    killed.restart()
    # What the victim's store kept: every state its user heard of that benefits it (F1, F2).
    assert killed.store is not None
    kept = killed.store.channel(world.cid)
    assert kept is not None and kept.current is not None
    assert all(kept.current.state.version >= version for version in killed.benefits)
    for node in (world.alice, world.bob):
        node.on_question = _reject
    if victim_first:
        # The restarted side's user pays at once, before its node has the peer's Sync: the
        # payment waits for it (it must not build on a state the node lost).
        first = _outcome(killed.client.send(world.cid, ((ETH, 1),)))
        world.settle()
    else:
        # The peer pays first: its update is below the restarted side's new signed_up_to,
        # refused with that version, and retried above it.
        world.settle()
        peer = world.bob if killed is world.alice else world.alice
        first = _outcome(peer.client.send(world.cid, ((ETH, 1),)))
        world.settle()
    assert first and not isinstance(first[0], Failure), first

    a, b = world.alice.client.channels[world.cid], world.bob.client.channels[world.cid]
    assert a.current == b.current, (a.current, b.current)
    assert not (a.needs_sync or b.needs_sync or a.staged or b.staged)
    agreed = a.version
    # Nothing a user heard of is lost.
    assert agreed >= max(world.alice.heard + world.bob.heard)
    paid_by_alice = amount if proposer_name == "alice" else -amount
    first_payer = killed if victim_first else (world.bob if killed is world.alice else world.alice)
    moved = before[0] - world.balances(world.alice)[0] - (1 if first_payer is world.alice else -1)
    assert moved in (0, paid_by_alice)
    if told_ok:
        assert moved == paid_by_alice and agreed >= told_ok[0] > start_version
    _check_history(world, flow)
    # The channel goes on, both ways (the peer learns to propose above a reservation).
    for payer in (world.alice, world.bob, world.alice):
        outcome = _outcome(payer.client.send(world.cid, ((ETH, 1),)))
        world.settle(3)
        assert outcome and not isinstance(outcome[0], Failure), outcome
        assert getattr(outcome[0], "version", 0) > agreed
        agreed = world.alice.client.channels[world.cid].version
    assert world.alice.client.channels[world.cid].current == \
        world.bob.client.channels[world.cid].current
    _check_history(world, flow)
    # Never two states of one version from one signer, across its incarnations.
    for node in (world.alice, world.bob):
        assert all(len(signatures) == 1 for signatures in node.signed.values()), node.name
    for node in (world.alice, world.bob):
        node.client.stop()
        assert node.store is not None
        node.store.close()
    return True


def _check_history(world: World, flow: str) -> None:
    """Each side's history is its stored states: every payment once, in version order, adding
    up to the balance its store holds; and labelled by who proposed it: only bob's request is
    a request (payments a sync restored after a crash were the restarted side's own)."""
    for node, index in ((world.alice, 0), (world.bob, 1)):
        assert node.store is not None
        records = [r for r in node.store.history.recent if r.channel_id == world.cid
                   and r.version is not None]
        versions = [r.version for r in records]
        assert versions == sorted(set(versions)), (node.name, versions)
        channel = node.store.channel(world.cid)
        assert channel is not None and channel.current is not None
        net = sum(r.amount if r.direction == "received" else -r.amount for r in records)
        opening = (5 * ETHER, 3 * ETHER)[index]
        assert opening + net == channel.current.state.balances[0][index], node.name
        requests = [r for r in records if r.request]
        if flow == "payment":
            assert requests == [], (node.name, requests)
        else:  # bob asked alice: alice sent it, bob received it
            direction = "received" if node is world.bob else "sent"
            assert all(r.direction == direction for r in requests), (node.name, requests)


def _points() -> Iterator[tuple[str, str, bool, bool, bool]]:
    for flow in FLOWS:
        for victim in ("alice", "bob"):
            for power_loss in (False, True):
                for delivered in (False, True):
                    for victim_first in (True, False):
                        yield flow, victim, power_loss, delivered, victim_first


@pytest.mark.parametrize(("flow", "victim", "power_loss", "delivered", "victim_first"),
                         list(_points()))
def test_a_crash_at_every_step(tmp_path: Path, synced_sizes: dict[int, bytes], flow: str,
                               victim: str, power_loss: bool, delivered: bool,
                               victim_first: bool) -> None:
    """`victim_first`: after the restart, the victim pays first (at once), else its peer."""
    points = 0
    for dies_at in range(40):
        run_dir = tmp_path / str(dies_at)
        if not _run(run_dir, synced_sizes, flow, victim, dies_at, power_loss, delivered,
                    victim_first):
            break
        points += 1
    else:
        raise AssertionError("the update never ended")
    assert points >= 2  # the victim acts at least twice in every flow
