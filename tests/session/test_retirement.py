"""Retiring closed channels (perund.session.retirement) on a real chain: only after the
retention, only what the chain holds nothing of, never a virtual channel's parent; retired
channels leave the client and the loading, and stay readable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor, task

from perund.chain.backend import ChainBackend
from perund.channel.phases import Phase
from perund.channel.types import ETH, Address, ChannelID, VirtualParams
from perund.session.notices import UpdateNotice
from perund.session.retirement import Retirement
from perund.storage.store import SessionStore
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


@pytest_twisted.ensureDeferred
async def test_a_closed_channel_retires_after_the_retention_only(
        chain: ChainBackend, tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "alice", reactor)
    pair = await listening_pair(chain, alice_store=store)
    try:
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
        assert await retirement.retire_due() == [cid]
        assert cid not in alice.channels and still_open in alice.channels
        assert store.retired_channel(cid) == closed
        assert await retirement.retire_due() == []  # once
        await store.flush()
    finally:
        await pair.alice.peers.stop()
        await pair.bob.peers.stop()
        store.close()
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
        chain: ChainBackend, tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "alice", reactor)
    pair = await listening_pair(chain, alice_store=store)
    try:
        alice = pair.alice.client
        # Held closed while the chain holds its deposits (its conclusion lost): it must be
        # settled again, not retired.
        lost = await open_between(pair.alice, pair.bob, ETHER, 0)
        alice.channels[lost] = replace(alice.channels[lost], phase=Phase.CLOSED)
        store.put(alice.channels[lost])
        # Closed, but the parent of a virtual channel still held.
        parent = await open_between(pair.alice, pair.bob, ETHER, 0)
        await close_cooperatively(pair, parent)
        child = alice.channels[parent]
        virtual = replace(child, channel_id=ChannelID(b"\x77" * 32), phase=Phase.OPEN,
                          params=VirtualParams(60, 1, (alice.address, Address(b"\x02" * 20)),
                                               (parent, ChannelID(b"\x66" * 32))))
        alice.channels[virtual.channel_id] = virtual

        retirement = retirement_of(pair, chain, store, retention=0.0)
        assert await retirement.retire_due() == []
        assert lost in alice.channels and parent in alice.channels

        del alice.channels[virtual.channel_id]
        assert await retirement.retire_due() == [parent]
        assert lost in alice.channels
    finally:
        await pair.alice.peers.stop()
        await pair.bob.peers.stop()
        store.close()


@pytest_twisted.ensureDeferred
async def test_the_looks_run_on_their_own_until_stopped(
        chain: ChainBackend, tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "alice", reactor)
    pair = await listening_pair(chain, alice_store=store)
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
        await pair.alice.peers.stop()
        await pair.bob.peers.stop()
        store.close()

