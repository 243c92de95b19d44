"""Retiring closed channels (perund.session.retirement) on a real chain: only after the
retention, only what the chain holds nothing of, never a virtual channel's parent; retired
channels leave the client and the loading, and stay readable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor, task
from twisted.logger import LogLevel, capturedLogs, formatEvent

from perund.chain.backend import ChainBackend
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.types import (
    ETH,
    Address,
    ChannelID,
    SubAlloc,
    VirtualParams,
    VirtualProof,
)
from perund.errors import FailedPrecondition
from perund.session.notices import UpdateNotice
from perund.session.retirement import Retirement
from perund.storage.store import SessionStore
from perund.storage.virtual_records import VirtualRecord, encode_record, record_name
from tests.session.conftest import ETHER, Pair, listening_pair, open_between


async def close_cooperatively(pair: Pair, cid: ChannelID) -> None:
    closing = pair.alice.client.close(cid)
    question = await pair.bob.update_question()
    assert isinstance(question, UpdateNotice)
    await pair.bob.client.respond_update(cid, question.update_id, True)
    assert (await closing).phase is Phase.CLOSED


def retirement_of(pair: Pair, chain: ChainBackend, store: SessionStore,
                  retention: float) -> Retirement:
    return Retirement(reactor, chain=chain, client=pair.alice.client, store=store,
                      retention=retention, session_id="test")


@pytest_twisted.async_yield_fixture
async def held(chain: ChainBackend, tmp_path: Path,
               ) -> AsyncIterator[tuple[Pair, SessionStore]]:
    """alice, whose channels are in a store of her own, and bob, listening; stopped after."""
    store = SessionStore(tmp_path / "alice", reactor)
    pair = await listening_pair(chain, alice_store=store)
    yield pair, store
    pair.alice.client.stop()
    await pair.alice.peers.stop()
    await pair.bob.peers.stop()
    store.close()


@pytest_twisted.ensureDeferred
async def test_a_closed_channel_retires_after_the_retention_only(
        chain: ChainBackend, held: tuple[Pair, SessionStore], tmp_path: Path) -> None:
    pair, store = held
    alice = pair.alice.client
    still_open = await open_between(pair.alice, pair.bob, ETHER, 0)
    cid = await open_between(pair.alice, pair.bob, ETHER, 0)
    await alice.send(cid, ((ETH, ETHER // 4),))
    await close_cooperatively(pair, cid)
    closed = alice.channels[cid]

    waiting = retirement_of(pair, chain, store, retention=3600.0)
    assert waiting.due() == []
    assert await waiting.retire_due() == []
    assert cid in alice.channels

    retirement = retirement_of(pair, chain, store, retention=0.0)
    alice.store_error = FailedPrecondition("the store failed")  # a full disk, say
    assert await retirement.retire_due() == []
    alice.store_error = None
    assert await retirement.retire_due() == [cid]
    assert cid not in alice.channels and still_open in alice.channels
    assert cid not in alice._sends._lines  # nothing of it stays in the send queue either
    assert store.retired_channel(cid) == closed
    assert await retirement.retire_due() == []  # once
    alice.stop()
    store.close()  # commits and releases the store (closing it again later is a no-op)
    reopened = SessionStore(tmp_path / "alice", reactor)
    try:
        assert [c.channel_id for c in reopened.channels()] == [still_open]
        assert reopened.retired_channel(cid) == closed
        payments = [r for r in reopened.history.recent if r.channel_id == cid]
        assert [r.amount for r in payments] == [ETHER // 4]
    finally:
        reopened.close()


@pytest_twisted.ensureDeferred
async def test_what_the_chain_still_holds_or_a_virtual_channel_rests_on_stays(
        chain: ChainBackend, held: tuple[Pair, SessionStore]) -> None:
    pair, store = held
    alice = pair.alice.client
    # Held closed while the chain holds its deposits (its conclusion lost): it must be
    # settled again, not retired.
    lost = await open_between(pair.alice, pair.bob, ETHER, 0)
    alice.channels[lost] = replace(alice.channels[lost], phase=Phase.CLOSED)
    store.put(alice.channels[lost])
    # Closed, but the parent of a virtual channel still held.
    parent = await open_between(pair.alice, pair.bob, ETHER, 0)
    await close_cooperatively(pair, parent)
    virtual = virtual_child(pair, parent, Phase.OPEN)
    alice.channels[virtual.channel_id] = virtual

    retirement = retirement_of(pair, chain, store, retention=0.0)
    with capturedLogs() as logged:
        assert await retirement.retire_due() == []
    assert parent in alice.channels
    # The lost conclusion is settled again, as at a start.
    assert alice.channels[lost].phase is not Phase.CLOSED
    assert any(e["log_level"] is LogLevel.critical and "Settling it again" in
               formatEvent(e) for e in logged)

    del alice.channels[virtual.channel_id]
    assert await retirement.retire_due() == [parent]
    assert lost in alice.channels


@pytest_twisted.ensureDeferred
async def test_the_looks_run_on_their_own_until_stopped(
        chain: ChainBackend, held: tuple[Pair, SessionStore]) -> None:
    pair, store = held
    retirement = retirement_of(pair, chain, store, retention=0.0)
    try:
        cid = await open_between(pair.alice, pair.bob, ETHER, 0)
        retirement.start()
        await close_cooperatively(pair, cid)
        assert retirement.interval == 1.0
        for _ in range(100):
            if cid not in pair.alice.client.channels:
                break
            await task.deferLater(reactor, 0.05)
        assert cid not in pair.alice.client.channels
        retirement.stop()
        assert not reactor.getDelayedCalls() or all(
            c.func != retirement._look for c in reactor.getDelayedCalls())  # type: ignore[attr-defined]
    finally:
        retirement.stop()



VIRTUAL = ChannelID(b"\x77" * 32)


def virtual_child(pair: Pair, parent: ChannelID, phase: Phase,
                  vid: ChannelID = VIRTUAL) -> Channel:
    """Virtual channel `vid` of alice's funded through `parent` (built, not opened: what
    retiring reads of it is its params, phase and closing time)."""
    alice = pair.alice.client
    ledger = alice.channels[parent]
    assert ledger.current is not None
    state = replace(ledger.current.state, channel_id=vid, locked=())
    return replace(ledger, channel_id=vid, phase=phase,
                   current=replace(ledger.current, state=state),
                   params=VirtualParams(60, 1, (alice.address, Address(b"\x02" * 20)),
                                        (parent, ChannelID(b"\x66" * 32))))


def locking(channel: Channel, vid: ChannelID) -> Channel:
    """`channel` with its current state locking one wei for virtual channel `vid`."""
    assert channel.current is not None
    state = replace(channel.current.state, locked=(SubAlloc(vid, (1,)),))
    return replace(channel, current=replace(channel.current, state=state))


@pytest_twisted.ensureDeferred
async def test_a_closed_virtual_channel_retires_once_its_parent_is_done_with_it(
        chain: ChainBackend, held: tuple[Pair, SessionStore]) -> None:
    pair, store = held
    alice = pair.alice.client
    parent = await open_between(pair.alice, pair.bob, ETHER, 0)
    virtual = virtual_child(pair, parent, Phase.CLOSED)
    alice.channels[virtual.channel_id] = virtual
    store.put(virtual)
    open_parent = alice.channels[parent]
    alice.channels[parent] = locking(open_parent, virtual.channel_id)
    retirement = retirement_of(pair, chain, store, retention=0.0)
    # Its outcome is still locked in the open parent: not folded yet.
    assert await retirement.retire_due() == []
    # Folded: the parent's state locks nothing for it any more.
    alice.channels[parent] = open_parent
    assert await retirement.retire_due() == [virtual.channel_id]
    assert store.retired_channel(virtual.channel_id) == virtual
    assert parent in alice.channels  # open

    # A closed parent pinned only by a closed virtual channel: both go in one look.
    second = await open_between(pair.alice, pair.bob, ETHER, 0)
    child = virtual_child(pair, second, Phase.CLOSED, ChannelID(b"\x78" * 32))
    alice.channels[child.channel_id] = child
    store.put(child)
    await close_cooperatively(pair, second)
    assert await retirement.retire_due() == [child.channel_id, second]


@pytest_twisted.ensureDeferred
async def test_an_intermediarys_record_pins_its_parents_until_both_may_retire(
        chain: ChainBackend, held: tuple[Pair, SessionStore]) -> None:
    pair, store = held
    alice = pair.alice.client
    first = await open_between(pair.alice, pair.bob, ETHER, 0)
    second = await open_between(pair.alice, pair.bob, ETHER, 0)
    relayed = virtual_child(pair, first, Phase.CLOSED)
    assert relayed.current is not None
    params = VirtualParams(60, 1, (Address(b"\x01" * 20), Address(b"\x02" * 20)),
                           (first, second))
    record = VirtualRecord(VirtualProof(params, relayed.current.state,
                                        relayed.current.signatures),
                           (relayed.current.state, 123))  # settled on-chain
    alice.intermediary.records[VIRTUAL] = record
    store.set_meta(record_name(VIRTUAL), encode_record(record))
    await close_cooperatively(pair, first)
    retirement = retirement_of(pair, chain, store, retention=0.0)
    assert await retirement.retire_due() == []  # the second parent is open
    assert VIRTUAL in alice.intermediary.records
    await close_cooperatively(pair, second)
    assert await retirement.retire_due() == [first, second]
    assert alice.intermediary.records == {}
    assert store.meta(record_name(VIRTUAL)) is None
