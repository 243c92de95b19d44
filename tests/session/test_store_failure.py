"""A session whose store can no longer make writes durable (a full disk): nothing it could not
keep leaves, every user request gets one clear error, and disputes are still answered."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from perund.chain.backend import ChainBackend
from perund.chain.results import Phase as ChainPhase
from perund.channel.changes import Registered
from perund.channel.types import ETH
from perund.errors import FailedPrecondition, StoreError
from perund.storage.store import SessionStore

from .conftest import ETHER, Pair, listening_pair
from .test_two_clients import open_channel


@pytest_twisted.async_yield_fixture
async def pair_on_disk(chain: ChainBackend, tmp_path: Path) -> AsyncIterator[Pair]:
    """Like `pair`, with alice's channels in a real session store."""
    store = SessionStore(tmp_path / "alice", reactor)
    both = await listening_pair(chain, store)
    yield both
    await both.alice.peers.stop()
    await both.bob.peers.stop()
    with pytest.raises(StoreError):
        store.close()  # it still cannot make the last writes durable


def disk_full(fd: int) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest_twisted.ensureDeferred
async def test_a_full_disk_stops_signing_and_keeps_answering_disputes(
        pair_on_disk: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob, chain = pair_on_disk.alice, pair_on_disk.bob, pair_on_disk.chain
    cid = await open_channel(pair_on_disk)
    old = bob.client.channels[cid].current
    paid = await alice.client.send(cid, ((ETH, ETHER),))
    latest = paid.current
    assert latest is not None and latest.state.version == 1

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(FailedPrecondition, match=r"store failed .*No space left"):
        await alice.client.send(cid, ((ETH, ETHER),))
    # Our signature on version 2 never left: bob knows nothing of it.
    assert bob.client.channels[cid].current == latest
    # Every later request fails at once, with the same clear error.
    with pytest.raises(FailedPrecondition, match="store failed"):
        await alice.client.send(cid, ((ETH, 1),))
    with pytest.raises(FailedPrecondition, match="store failed"):
        await alice.client.close(cid)

    # Bob registers an old state: alice's node cannot record the dispute, but refutes it.
    assert old is not None and old.state.version == 0
    await chain.register(bob.account, bob.client.channels[cid].params, old.state,
                         old.signatures)
    alice.client.chain_input(cid, Registered(0, 10**10, False, old.state.balances))
    for _ in range(200):
        status = await chain.channel_status(cid)
        if status.version == 1:
            break
        await deferLater(reactor, 0.02)
    assert status.phase is ChainPhase.DISPUTE and status.version == 1
