"""MissingDeposits on a fake clock and a chain that answers from a table: a channel whose
deposits the chain lost is held, named once at critical, read again, and released."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from perund.chain.backend import ChainBackend
from perund.chain.results import ChannelStatus, Phase
from perund.channel.types import Address, ChannelID
from perund.errors import ChainNotReachable
from perund.session.missing_deposits import MissingDeposits
from tests.channel.factories import make_pair


class _Chain:
    """What the chain holds of each channel (total per asset), or unreachable."""

    def __init__(self) -> None:
        self.holding: dict[ChannelID, tuple[int, ...]] = {}
        self.unreachable = False

    async def channel_holdings(self, channels: Sequence[tuple[ChannelID, Sequence[Address]]]
                               ) -> list[tuple[int, ...]]:
        if self.unreachable:
            raise ChainNotReachable("the chain at http://127.0.0.1:1 is not reachable")
        return [self.holding.get(cid, (0,) * len(assets)) for cid, assets in channels]

    async def channel_funds(self, channels: Sequence[tuple[ChannelID, Sequence[Address]]]
                            ) -> list[tuple[ChannelStatus, tuple[int, ...]]]:
        status = ChannelStatus(Phase.NONE, 0, 0, b"\0" * 32)
        return [(status, held) for held in await self.channel_holdings(channels)]


def _setup() -> tuple[Clock, _Chain, MissingDeposits, ChannelID, int]:
    alice, _ = make_pair()
    clock, chain = Clock(), _Chain()
    total = sum(alice.latest.balances[0])
    chain.holding[alice.channel_id] = (total,)
    missing = MissingDeposits(clock, cast(ChainBackend, chain), lambda: [alice],
                              session_id="ab" * 16, recheck=30.0)
    return clock, chain, missing, alice.channel_id, total


def test_a_check_with_nothing_lost_fires_at_once_and_holds_nothing() -> None:
    _, _, missing, cid, _ = _setup()
    done = missing.check()
    assert done.called and missing.held == {} and missing.refusal(cid) is None


def test_a_channel_the_chain_lost_is_held_named_once_and_released_when_back() -> None:
    clock, chain, missing, cid, total = _setup()
    chain.holding[cid] = (0,)
    with capturedLogs() as events:
        missing.check()
        missing.check()  # a second rewind: not named again
    assert cid in missing.held
    refusal = missing.refusal(cid)
    assert refusal is not None and refusal.code == 204
    assert "no longer holds this channel's deposits" in refusal.message
    assert [e["log_level"] for e in events] == [LogLevel.critical]
    # Read again without news every `recheck` seconds; released once the deposits are back.
    chain.holding[cid] = (total,)
    with capturedLogs() as events:
        clock.advance(30.0)
    assert missing.held == {} and missing.refusal(cid) is None
    assert any("again" in str(e.get("log_format")) for e in events)
    assert clock.getDelayedCalls() == []


def test_a_deposit_seen_reads_a_held_channel_again_and_a_failed_read_is_tried_later() -> None:
    clock, chain, missing, cid, total = _setup()
    chain.holding[cid] = (0,)
    missing.check()
    chain.holding[cid] = (total,)
    chain.unreachable = True
    with capturedLogs() as events:
        done = missing.check()
    assert done.called and cid in missing.held  # kept while it cannot be read
    assert [e["log_level"] for e in events] == [LogLevel.warn]
    chain.unreachable = False
    missing.deposit_seen(cid)
    assert missing.held == {}
    missing.stop()
    assert all(not call.active() for call in clock.getDelayedCalls())
