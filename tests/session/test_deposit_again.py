"""`ChainSettlement.deposit_again` on the embedded chain: our share of an open channel whose
deposit the chain lost is deposited again as the funding deposits it, only what is missing,
never twice, and not at all once the channel settles."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.logger import LogLevel, capturedLogs, formatEvent

from perund.chain.backend import ChainBackend
from perund.channel import events as ev
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.types import ETH
from perund.session.onchain import ChainSettlement

from .conftest import ETHER
from .test_onchain import two_accounts


def _open(fund: ev.Fund) -> Channel:
    return Channel(fund.channel_id, fund.params, fund.index, Phase.OPEN, None)


@pytest_twisted.ensureDeferred
async def test_our_lost_share_is_deposited_again_once_and_only_what_is_missing(
        chain: ChainBackend) -> None:
    alice, bob, mine, theirs = two_accounts(chain)
    await chain.deposit(bob, theirs.channel_id, 1, ETH, ETHER)
    # The chain holds half of alice's 2 ETH (say, one of two deposits of hers was lost).
    await chain.deposit(alice, mine.channel_id, 0, ETH, ETHER)
    ours = ChainSettlement(reactor, chain, alice, poll_interval=0.02)
    share = ((ETH, 2 * ETHER),)
    with capturedLogs() as events:
        made = await ours.deposit_again(_open(mine), share, lambda: True)
    assert made == [(ETH, ETHER)] and len(ours.receipts) == 1
    assert await chain.holdings(mine.channel_id) == (2 * ETHER, ETHER)
    [warned] = [e for e in events if e["log_level"] == LogLevel.warn]
    assert formatEvent(warned).startswith(
        f"channel 0x{mine.channel_id.hex()}: deposited 1 ETH of our share again in block ")
    assert warned["deposits"] == [("0x" + "00" * 20, ETHER)]
    # Asked again (a second check, a restart): the chain holds it, nothing is sent.
    assert await ours.deposit_again(_open(mine), share, lambda: True) == []
    assert len(ours.receipts) == 1
    assert await chain.holdings(mine.channel_id) == (2 * ETHER, ETHER)


@pytest_twisted.ensureDeferred
async def test_nothing_is_deposited_again_once_the_channel_settles(chain: ChainBackend) -> None:
    alice, bob, mine, theirs = two_accounts(chain)
    await chain.deposit(bob, theirs.channel_id, 1, ETH, ETHER)
    ours = ChainSettlement(reactor, chain, alice, poll_interval=0.02)
    asked: list[bool] = []

    def still() -> bool:
        asked.append(True)
        return False  # the channel began to settle while the holdings were read

    assert await ours.deposit_again(_open(mine), ((ETH, 2 * ETHER),), still) == []
    assert asked and ours.receipts == []
    assert await chain.holdings(mine.channel_id) == (0, ETHER)
