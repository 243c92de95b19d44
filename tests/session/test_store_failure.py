"""A session whose store can no longer make writes durable (a full disk): nothing it could not
keep leaves, every user request gets one clear error, and disputes are still answered. alice's
channels live in a real session store whose fsync fails; in memory, on a fake clock."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from perund.channel import events as ev
from perund.channel import records
from perund.channel.changes import Registered
from perund.channel.types import ETH
from perund.errors import FailedPrecondition, StoreError
from perund.storage.store import SessionStore

from .fakes import ETHER, Net, open_channel, result, side


def disk_full(fd: int) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("reserved", [True, False])
def test_a_full_disk_stops_signing_and_keeps_answering_disputes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reserved: bool) -> None:
    """`reserved`: the next version is within alice's durable reservation, so her signature on
    it leaves without waiting for her write; else the write that reserves it must be durable
    first (every payment needs one with a reservation block of 1)."""
    if not reserved:
        monkeypatch.setattr(records, "RESERVATION_BLOCK", 1)
    clock = Clock()
    net = Net(clock)
    store = SessionStore(tmp_path / "alice", clock)
    alice, bob = side(net, store=store), side(net)
    cid = open_channel(net, alice, bob)
    old = bob.client.channels[cid].current
    paid = alice.client.send(cid, ((ETH, ETHER),))
    clock.advance(0)
    latest = result(paid).current
    assert latest is not None and latest.state.version == 1

    monkeypatch.setattr(os, "fsync", disk_full)
    if reserved:
        # Covered by the reservation, our signature on version 2 leaves without waiting for
        # our write, and the payment succeeds: bob, the payee, holds the state durably (his
        # disk is fine). Nothing waited for alice's writes, so her failure shows at their
        # deferred fsync; her next request meets it.
        paid = alice.client.send(cid, ((ETH, ETHER),))
        clock.advance(0)
        latest = result(paid).current
        assert latest is not None and latest.state.version == 2
        assert bob.client.channels[cid].current == latest
        clock.advance(1)
        failing = alice.client.send(cid, ((ETH, ETHER),))
        clock.advance(0)
        with pytest.raises(FailedPrecondition, match=r"store failed .*No space left"):
            result(failing)
        assert bob.client.channels[cid].current == latest
    else:
        failing = alice.client.send(cid, ((ETH, ETHER),))
        clock.advance(0)
        with pytest.raises(FailedPrecondition, match=r"store failed .*No space left"):
            result(failing)
        # Our signature on version 2 never left: bob knows nothing of it.
        assert bob.client.channels[cid].current == latest
    # Every later request fails at once, with the same clear error.
    with pytest.raises(FailedPrecondition, match="store failed"):
        result(alice.client.send(cid, ((ETH, 1),)))
    with pytest.raises(FailedPrecondition, match="store failed"):
        result(alice.client.close(cid))

    # Bob registers an old state: alice's node cannot record the dispute, but refutes it.
    assert old is not None and old.state.version == 0
    alice.client.chain_input(cid, Registered(0, 10**10, False, old.state.balances))
    clock.advance(0)
    assert [(type(e), e.state.version) for e in alice.chain.asked] == [
        (ev.Register, latest.state.version)]

    alice.client.stop()
    with pytest.raises(StoreError):
        store.close()  # it still cannot make the last writes durable
