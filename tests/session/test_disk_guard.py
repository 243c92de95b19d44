"""A session whose store's disk is nearly full takes no payment, ours or the peer's, with a
clear error, and still closes (perund.disk_guard). In memory, on a fake clock, with the free
space told by the test."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from perund.channel import events as ev
from perund.channel.phases import Phase
from perund.channel.types import ETH
from perund.disk_guard import CHECK_INTERVAL, LOW, DiskGuard
from perund.errors import FailedPrecondition, PeerRejected

from .fakes import ETHER, Net, open_channel, result, side


def test_below_the_floor_only_closes_pass_and_above_it_all_again() -> None:
    clock = Clock()
    free = {"value": 10 * 2**20}
    guard = DiskGuard(clock, 2**20, free=lambda _: free["value"])
    guard.watch("s", Path("/srv/perund/alice"))
    assert guard.low == set() and guard.refusal("s", False) is None
    free["value"] = 2**19
    with capturedLogs() as logs:
        clock.advance(CHECK_INTERVAL)
        clock.advance(CHECK_INTERVAL)
    assert [e["log_level"] for e in logs] == [LogLevel.critical]  # said once
    refused = guard.refusal("s", False)
    assert isinstance(refused, FailedPrecondition) and refused.message == LOW
    assert guard.refusal("s", True) is None  # a close
    free["value"] = 2**21
    clock.advance(CHECK_INTERVAL)
    assert guard.refusal("s", False) is None and guard.low == set()
    free["value"] = 0
    guard.unwatch("s")
    clock.advance(CHECK_INTERVAL)
    assert guard.low == set()
    guard.stop()


def test_a_full_disk_refuses_payments_both_ways_and_lets_the_channel_close() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob)
    free = {"value": 0}
    guard = DiskGuard(clock, 2**20, free=lambda _: free["value"])
    guard.watch("alice", Path("/srv/perund/alice"))
    alice.client.refusals.append(lambda _, down: guard.refusal("alice", down))
    before = alice.client.channels[cid].current

    with pytest.raises(FailedPrecondition, match="disk is nearly full"):
        result(alice.client.send(cid, ((ETH, 1),)))
    paying = bob.client.send(cid, ((ETH, 1),))
    clock.advance(1)
    with pytest.raises(PeerRejected, match="disk is nearly full"):
        result(paying)
    assert alice.client.channels[cid].current == before == bob.client.channels[cid].current

    free["value"] = 2**21
    clock.advance(CHECK_INTERVAL)
    paid = alice.client.send(cid, ((ETH, ETHER),))
    clock.advance(1)
    after = result(paid).current
    assert before is not None and after is not None
    assert after.state.balances[0][0] == before.state.balances[0][0] - ETHER
    free["value"] = 0
    clock.advance(CHECK_INTERVAL)
    closing = alice.client.close(cid)
    clock.advance(1)
    staged = bob.client.channels[cid].staged  # the final update: bob's user is asked
    assert staged is not None and staged.state.is_final
    bob.client.respond_update(cid, staged.update_id, True)
    clock.pump([1.0] * 10)
    # The final state is signed by both and goes on-chain: the close got past the guard.
    assert [type(e) for e in alice.chain.asked] == [ev.ConcludeFinal]
    assert alice.client.channels[cid].phase is Phase.CLOSING and not closing.called
    guard.stop()
