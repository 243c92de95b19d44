"""A settlement transaction that fails for any reason but a revert (the chain unreachable or
answering with an error, a transaction not mined in time, the account out of gas money) is sent
again, each retry waiting
longer (n times the retry delay, at most a minute); one the contract refused is not. In memory, on
a fake clock."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from perund.channel import events as ev
from perund.channel.phases import Phase
from perund.channel.types import ETH
from perund.errors import (
    ChainNotReachable,
    ChainRpcError,
    InsufficientFunds,
    InvalidContracts,
    PerundError,
    ProtocolError,
    TxReverted,
    TxTimedOut,
)
from perund.session.duties import SETTLE_RETRY_CAP

from .fakes import Net, open_channel, side


@pytest.mark.parametrize("error", [
    ChainNotReachable("connection refused", chainUrl="http://down"),
    TxTimedOut("not mined in time", txHash="0x00"),
    InsufficientFunds("account 0x… cannot pay for the register transaction", txType="register"),
    # A load-balanced node's passing error, and replies cut short: one of these, answered to
    # the status read before a refutation, once let the stale state stand (the chain review).
    ChainRpcError("eth_call", -32000, "header not found"),
    ProtocolError("eth_getTransactionReceipt: the reply was cut off"),
    InvalidContracts("the Adjudicator answered channelStatus with 120 undecodable bytes"),
], ids=["unreachable", "not-mined", "out-of-funds", "rpc-error", "cut-off", "undecodable"])
def test_a_register_is_sent_again_until_it_gets_through(error: PerundError) -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net, settle_retry_delay=5.0), side(net)
    cid = open_channel(net, alice, bob)
    alice.client.send(cid, ((ETH, 1),))
    clock.advance(0)
    alice.chain.failures = [error, error]
    start = clock.seconds()

    alice.client.force_close(cid)
    clock.pump([1.0] * 30)

    assert [type(e) for e in alice.chain.asked] == [ev.Register] * 3
    assert all(isinstance(e, ev.Register) and e.state.version == 1 for e in alice.chain.asked)
    assert [t - start for t in alice.chain.asked_at] == [0.0, 5.0, 15.0]
    assert alice.client.channels[cid].phase is Phase.CLOSING


def test_the_wait_between_retries_is_capped() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net, settle_retry_delay=40.0), side(net)
    cid = open_channel(net, alice, bob)
    alice.chain.failures = [ChainNotReachable("down", chainUrl="http://down")] * 3
    start = clock.seconds()

    alice.client.force_close(cid)
    clock.pump([10.0] * 30)

    assert [t - start for t in alice.chain.asked_at] == [
        0.0, 40.0, 40.0 + SETTLE_RETRY_CAP, 40.0 + 2 * SETTLE_RETRY_CAP]


def test_a_reverted_transaction_is_not_sent_again() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net, settle_retry_delay=5.0), side(net)
    cid = open_channel(net, alice, bob)
    alice.chain.failures = [TxReverted("a higher version is registered", txHash="0x00")]

    alice.client.force_close(cid)
    clock.pump([5.0] * 100)

    assert len(alice.chain.asked) == 1


def test_a_stopped_client_sends_nothing_again() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net, settle_retry_delay=5.0), side(net)
    cid = open_channel(net, alice, bob)
    alice.chain.failures = [ChainNotReachable("down", chainUrl="http://down")]

    alice.client.force_close(cid)
    alice.client.stop()
    clock.pump([5.0] * 10)

    assert len(alice.chain.asked) == 1
