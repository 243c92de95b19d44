"""The intermediary's matcher on a fake clock: pairs only, the window, what it refuses, what it
keeps, and what it does once a virtual channel it funds is registered."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from perund.chain.results import ChainEvent
from perund.channel import events as ev
from perund.channel.changes import (
    Change,
    ForceClose,
    MatchFailed,
    OwnUpdate,
    RespondUpdate,
    UpdateReceived,
)
from perund.channel.machine import transition
from perund.channel.proposal import Deployment
from perund.channel.records import Channel
from perund.channel.types import Address, ChannelID
from perund.channel.virtual import proof_of
from perund.session.intermediary import UNWILLING, Intermediary
from perund.storage import MemoryStore
from perund.storage.virtual_records import PREFIX, decode_record, record_name
from perund.wire.messages import Message, UpdateReject, VirtualLock
from tests.channel.factories import deliver
from tests.channel.virtual_factories import (
    ALICE,
    CAROL,
    DEPLOYMENT,
    INGRID,
    TOKEN,
    Hub,
    make_hub,
)

WINDOW = 5.0


@dataclass
class FakeLinks:
    sent: list[tuple[Address, Message]] = field(default_factory=list)
    refusals: list[Address] = field(default_factory=list)

    def send(self, peer: Address, msg: Message) -> Deferred[None]:
        self.sent.append((peer, msg))
        return succeed(None)

    def refused(self, peer: Address) -> bool:
        self.refusals.append(peer)
        return True


@dataclass
class Rig:
    hub: Hub
    clock: Clock
    links: FakeLinks
    store: MemoryStore
    channels: dict[ChannelID, Channel]
    applied: list[tuple[ChannelID, Change]]
    registered: list[ChannelID]
    ingrid: Intermediary

    def apply(self, channel_id: ChannelID, change: Change) -> None:
        self.applied.append((channel_id, change))
        new, _ = transition(self.channels[channel_id], change)
        self.channels[channel_id] = new

    def lock_from(self, party: str, fee: tuple[int, ...] = ()
                  ) -> tuple[ChannelID, ev.AwaitingMatch, VirtualLock]:
        """The party's lock (paying `fee`) delivered to ingrid's core (which holds it);
        ingrid's event."""
        hub = self.hub
        if party == "alice":
            ledger, v, signer, mine = hub.la_ingrid, hub.v_alice, ALICE, hub.la_alice
        else:
            ledger, v, signer, mine = hub.lc_ingrid, hub.v_carol, CAROL, hub.lc_carol
        _, sent = transition(mine, OwnUpdate(signer, (), False, replace(proof_of(v), fee=fee)))
        update = sent[1]
        assert isinstance(update, ev.SendUpdate) and update.proof is not None
        held, events = deliver(self.channels[ledger.channel_id], update, signer, INGRID)
        self.channels[ledger.channel_id] = held
        awaiting = events[0]
        assert isinstance(awaiting, ev.AwaitingMatch)
        return ledger.channel_id, awaiting, VirtualLock(update.state, update.signature,
                                                        update.proof)


def rig(enabled: bool = True, deployment: Deployment = DEPLOYMENT) -> Rig:
    hub = make_hub()
    clock = Clock()
    links = FakeLinks()
    store = MemoryStore()
    channels = {c.channel_id: c for c in (hub.la_ingrid, hub.lc_ingrid)}
    applied: list[tuple[ChannelID, Change]] = []
    registered: list[ChannelID] = []
    holder: dict[str, Rig] = {}

    ingrid = Intermediary(clock, enabled=enabled, window=WINDOW, signer=INGRID,
                          links=links, channels=channels, store=store,  # type: ignore[arg-type]
                          apply=lambda cid, change: holder["rig"].apply(cid, change),
                          deployment=deployment, registered=registered.append)
    r = Rig(hub, clock, links, store, channels, applied, registered, ingrid)
    holder["rig"] = r
    return r


def test_a_pair_is_countersigned_together_and_recorded_first() -> None:
    r = rig()
    la, first, _ = r.lock_from("alice")
    r.ingrid.awaiting(first)
    assert r.applied == [] and r.clock.getDelayedCalls()
    assert r.ingrid.holds(first.update_id)  # no question of our user's (a withdrawal is not)
    lc, second, _ = r.lock_from("carol")
    r.ingrid.awaiting(second)
    assert not r.ingrid.holds(first.update_id) and not r.ingrid.holds(second.update_id)
    assert r.applied == [(la, RespondUpdate(INGRID, first.update_id, True)),
                         (lc, RespondUpdate(INGRID, second.update_id, True))]
    assert not r.clock.getDelayedCalls()
    vid = first.proof.state.channel_id
    assert set(r.store.metas(PREFIX)) == {record_name(vid)}
    assert decode_record(r.store.metas(PREFIX)[record_name(vid)], vid).proof == first.proof
    for ledger in (la, lc):
        assert r.channels[ledger].latest.locked[0].channel_id == vid
    # After a restart the record is there.
    again = Intermediary(Clock(), enabled=True, window=WINDOW, signer=INGRID,
                         links=r.links, channels=r.channels, store=r.store,  # type: ignore[arg-type]
                         apply=r.apply, deployment=DEPLOYMENT,
                         registered=r.registered.append)
    assert again.proof(vid) == first.proof and again.registration(vid) is None


def test_a_lock_alone_is_refused_exactly_at_the_end_of_the_window() -> None:
    r = rig()
    la, first, _ = r.lock_from("alice")
    r.ingrid.awaiting(first)
    r.clock.advance(WINDOW - 0.001)
    assert r.applied == []
    r.clock.advance(0.001)
    assert r.applied == [(la, MatchFailed(first.update_id))]
    assert r.channels[la].staged is None and not r.channels[la].latest.locked
    assert not r.store.metas(PREFIX)


def test_two_locks_of_different_states_are_no_pair() -> None:
    r = rig()
    la, first, _ = r.lock_from("alice")
    lc, second, _ = r.lock_from("carol")
    other = replace(second, proof=replace(second.proof, state=replace(
        second.proof.state, balances=((1, 4 * 10**18),))))
    r.ingrid.awaiting(first)
    r.ingrid.awaiting(other)
    assert r.applied == []
    r.clock.advance(WINDOW)
    assert sorted(r.applied, key=lambda a: a[0]) == sorted(
        [(la, MatchFailed(first.update_id)), (lc, MatchFailed(second.update_id))],
        key=lambda a: a[0])


def test_a_held_lock_the_peer_gave_up_is_never_answered() -> None:
    r = rig()
    la, first, _ = r.lock_from("alice")
    r.ingrid.awaiting(first)
    # alice reconnected: ingrid's core dropped the held update (and rejected it).
    r.channels[la] = r.channels[la].evolve(staged=None)
    _, second, _ = r.lock_from("carol")
    r.ingrid.awaiting(second)
    assert r.applied == []  # carol's waits for a new lock from alice


def test_what_is_refused_before_the_core_sees_it() -> None:
    r = rig()
    _, _, lock = r.lock_from("alice")
    assert isinstance(r.ingrid.received(ALICE.address, lock), UpdateReceived)
    cases: dict[str, tuple[Address, VirtualLock]] = {
        "not the params' ID": (ALICE.address, replace(lock, proof=replace(
            lock.proof, params=replace(lock.proof.params, nonce=7)))),
        "no party": (INGRID.address, lock),
        "through the other ledger": (CAROL.address, lock),
        "parents not ours": (ALICE.address, replace(lock, proof=replace(
            lock.proof, params=replace(lock.proof.params, parents=(
                ChannelID(b"\x01" * 32), lock.proof.params.parents[1]))))),
    }
    for name, (sender, msg) in cases.items():
        before = len(r.links.sent)
        assert r.ingrid.received(sender, msg) is None, name
        (peer, answer), = r.links.sent[before:]
        assert peer == sender and isinstance(answer, UpdateReject), name
        assert answer.version == msg.state.version
    # A virtual channel whose dispute would keep our funds longer than we allow our own
    # channels to (a hostile pair opened it with a century's challenge duration).
    strict = rig(deployment=replace(DEPLOYMENT, max_challenge_duration=1800))
    _, _, long_lock = strict.lock_from("alice")
    assert strict.ingrid.received(ALICE.address, long_lock) is None
    (peer, answer), = strict.links.sent
    assert peer == ALICE.address and isinstance(answer, UpdateReject)
    assert answer.reason == (
        "the virtual channel's challenge duration is too long: 1 h is above this node's maximum "
        "of 30 min, as a dispute would keep the funds that long (allowed: 1 min to 30 min)")
    # And too short, in the same words as a channel of our own.
    short = rig(deployment=replace(DEPLOYMENT, min_challenge_duration=7200))
    _, _, short_lock = short.lock_from("alice")
    assert short.ingrid.received(ALICE.address, short_lock) is None
    (_, answer), = short.links.sent
    assert isinstance(answer, UpdateReject)
    assert answer.reason == (
        "the virtual channel's challenge duration is too short: 1 h is below this node's "
        "minimum of 2 h, the time it needs to answer a dispute (allowed: 2 h to 30 d)")
    # Parents holding different assets: a later virtual state listing, at 0, a token only
    # carol's ledger holds would fit her ledger on-chain and never alice's, whose lock could
    # then never be concluded.
    mixed = rig()
    lc = mixed.channels[mixed.hub.lc_ingrid.channel_id]
    assert lc.current is not None
    state = lc.current.state
    with_token = replace(state, assets=(*state.assets, TOKEN),
                         balances=(*state.balances, (0, 0)))
    mixed.channels[lc.channel_id] = replace(lc, current=replace(lc.current, state=with_token))
    _, _, lock_a = mixed.lock_from("alice")
    assert mixed.ingrid.received(ALICE.address, lock_a) is None
    assert mixed.links.sent[-1][1].reason == (  # type: ignore[attr-defined]
        "the virtual channel's parent ledgers hold different assets")
    closed = rig(enabled=False)
    _, _, lock = closed.lock_from("alice")
    assert closed.ingrid.received(ALICE.address, lock) is None
    assert closed.links.sent[-1][1] == UpdateReject(lock.state.channel_id, lock.state.version,
                                                     UNWILLING)


def registered_event(vid: ChannelID, version: int, balances: Any, tx: bytes) -> ChainEvent:
    return ChainEvent(10, 0, tx, "Registered", {
        "channelID": vid, "version": version, "timeout": 9999, "isFinal": False,
        "balances": balances})


def test_a_registered_virtual_channel_is_recorded_and_settles_both_ledgers() -> None:
    r = rig()
    la, first, _ = r.lock_from("alice")
    lc, second, _ = r.lock_from("carol")
    r.ingrid.awaiting(first)
    r.ingrid.awaiting(second)
    vid = first.proof.state.channel_id
    r.applied.clear()
    r.ingrid.chain_event(registered_event(vid, 4, ((2, 3),), b"\x01" * 32), ())
    registration = r.ingrid.registration(vid)
    assert registration is not None and registration[1] == 9999
    assert registration[0].version == 4 and registration[0].assets == first.proof.state.assets
    assert r.applied == [(la, ForceClose()), (lc, ForceClose())]
    assert r.registered == [vid]
    assert decode_record(r.store.metas(PREFIX)[record_name(vid)], vid).registration \
        == registration
    # A replay of the same or an older registration changes nothing.
    r.ingrid.chain_event(registered_event(vid, 3, ((2, 3),), b"\x02" * 32), ())
    assert r.registered == [vid]
    # Other channels' events are not ours to record.
    r.ingrid.chain_event(registered_event(ChannelID(b"\x05" * 32), 1, ((1, 1),), b"\x03"), ())
    assert r.registered == [vid]
