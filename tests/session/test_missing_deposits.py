"""MissingDeposits on a fake clock and a chain that answers from a table: a channel whose
deposits the chain lost is held, named once at critical, read again, and released; our lost
share is deposited again (once at a time, only while the channel is open), the peer's is left
to the peer; OwnShares keeps our share from the funding on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import cast

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent

from perund.chain.backend import ChainBackend
from perund.chain.results import ChannelStatus, Phase
from perund.channel import events as ev
from perund.channel.phases import Phase as ChannelPhase
from perund.channel.records import Channel, SignedState
from perund.channel.types import ETH, Address, ChannelID, Params
from perund.errors import ChainNotReachable, InsufficientFunds
from perund.session.missing_deposits import MissingDeposits, OwnShares, Share
from perund.session.notices import ChannelNotice
from tests.channel.factories import ETHER, make_pair
from tests.session.fakes import MetaDict


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


class _PerParticipant(_Chain):
    """One asset (ETH); what the chain holds of each participant's deposit."""

    def __init__(self, held: tuple[int, int]) -> None:
        super().__init__()
        self.parts: dict[ChannelID, tuple[int, int]] = {}
        self.held = held

    async def channel_holdings(self, channels: Sequence[tuple[ChannelID, Sequence[Address]]]
                               ) -> list[tuple[int, ...]]:
        return [(sum(self.held),) for _ in channels]

    async def holdings(self, channel_id: ChannelID, asset: Address) -> tuple[int, int]:
        assert asset == ETH
        return self.held


class _Deposits:
    """A fake `ChainSettlement.deposit_again`: each call waits for the test."""

    def __init__(self) -> None:
        self.calls: list[tuple[ChannelID, Share, Callable[[], bool]]] = []
        self.pending: list[Deferred[list[tuple[Address, int]]]] = []

    def __call__(self, channel: Channel, share: Share, still: Callable[[], bool]
                 ) -> Deferred[list[tuple[Address, int]]]:
        self.calls.append((channel.channel_id, share, still))
        self.pending.append(Deferred())
        return self.pending[-1]


def _funding(channel: Channel) -> ev.Fund:
    assert type(channel.params) is Params and channel.current is not None
    state = channel.current.state
    return ev.Fund(channel.channel_id, channel.params, channel.index, state.assets,
                   state.balances)


def _updated(channel: Channel) -> Channel:
    """`channel` after a payment: version 1, 4 ETH moved to the peer."""
    assert channel.current is not None
    state = channel.current.state
    (ours, theirs), = state.balances
    moved = replace(state, version=1, balances=((ours - 4 * ETHER, theirs + 4 * ETHER),))
    return channel.evolve(current=SignedState(moved, channel.current.signatures))


class _Held:
    """alice's channel (10 ETH each, alice's share recorded) held by MissingDeposits."""

    def __init__(self, held: tuple[int, int], *, record: bool = True) -> None:
        alice, _ = make_pair()
        self.channel = _updated(alice)
        self.clock, self.chain, self.store = Clock(), _PerParticipant(held), MetaDict()
        self.shares = OwnShares(self.store)
        if record:
            self.shares.record(_funding(alice))
        self.deposits = _Deposits()
        self.missing = MissingDeposits(
            self.clock, cast(ChainBackend, self.chain), lambda: [self.channel],
            session_id="ab" * 16, recheck=30.0, shares=self.shares, redeposit=self.deposits)

    @property
    def cid(self) -> ChannelID:
        return self.channel.channel_id

    def message(self) -> str:
        refusal = self.missing.refusal(self.cid)
        assert refusal is not None
        return refusal.message


def test_our_lost_share_is_deposited_again_once_and_the_hold_ends_when_it_is_mined() -> None:
    held = _Held((0, 10 * ETHER))
    with capturedLogs() as events:
        held.missing.check()
    assert held.cid in held.missing.held
    assert [(cid, share) for cid, share, _ in held.deposits.calls] == [
        (held.cid, ((ETH, 10 * ETHER),))]
    assert "This node deposits our share again (10 ETH)." in held.message()
    assert "peer's" not in held.message()
    [critical] = [e for e in events if e["log_level"] == LogLevel.critical]
    assert "This node deposits our share again (10 ETH)" in formatEvent(critical)
    assert held.missing.missing(held.cid)[0].expected == 20 * ETHER
    # Another rewind, a deposit seen, the timer: no second deposit while one is under way.
    held.missing.check()
    held.clock.advance(30.0)
    assert len(held.deposits.calls) == 1
    still = held.deposits.calls[0][2]
    assert still()
    # Mined: the holdings are read at once, and the channel is released.
    held.chain.held = (10 * ETHER, 10 * ETHER)
    held.deposits.pending[0].callback([(ETH, 10 * ETHER)])
    assert held.missing.held == {} and held.missing.missing(held.cid) == ()
    assert not still()  # released: a late retry would deposit nothing
    assert len(held.deposits.calls) == 1


def test_the_peers_lost_share_is_left_to_the_peer_and_said_so() -> None:
    held = _Held((10 * ETHER, 0))
    held.missing.check()
    assert held.cid in held.missing.held and held.deposits.calls == []
    assert ("The peer's share (10 ETH) is the peer's to deposit again: the channel stays "
            "held until it does.") in held.message()
    assert "This node deposits" not in held.message()


def test_both_lost_shares_our_own_is_deposited_the_peers_awaited() -> None:
    held = _Held((0, 0))
    held.missing.check()
    assert len(held.deposits.calls) == 1
    assert "our share again (10 ETH)" in held.message()
    assert "The peer's share (10 ETH)" in held.message()


def test_a_share_this_node_cannot_tell_is_not_guessed() -> None:
    """A channel funded before shares were recorded, which has taken a payment since: its
    balances are no longer the deposits, so nothing is deposited."""
    held = _Held((0, 10 * ETHER), record=False)
    held.missing.check()
    assert held.cid in held.missing.held and held.deposits.calls == []
    assert "cannot tell whose share is missing" in held.message()


@pytest.mark.parametrize("phase", [ChannelPhase.CLOSING, ChannelPhase.DISPUTED])
def test_a_settling_channel_gets_no_deposit(phase: ChannelPhase) -> None:
    held = _Held((0, 0))  # nothing held: a settling channel is held too
    held.channel = held.channel.evolve(phase=phase)
    held.missing.check()
    assert held.cid in held.missing.held and held.deposits.calls == []


def test_a_channel_that_begins_to_settle_meanwhile_is_not_deposited_for() -> None:
    held = _Held((0, 10 * ETHER))
    held.missing.check()
    [(_, _, still)] = held.deposits.calls
    held.channel = held.channel.evolve(phase=ChannelPhase.CLOSING)
    assert not still()
    held.missing.stop()
    held.channel = held.channel.evolve(phase=ChannelPhase.OPEN)
    assert not still()  # the session stopped


def test_a_failed_deposit_is_logged_and_tried_at_the_next_check() -> None:
    held = _Held((0, 10 * ETHER))
    held.missing.check()
    with capturedLogs() as events:
        held.deposits.pending[0].errback(InsufficientFunds("cannot pay", txType="deposit"))
    [error] = [e for e in events if e["log_level"] == LogLevel.error]
    assert "depositing our share of channel" in formatEvent(error)
    assert "again failed (cannot pay); trying again in 30 s" in formatEvent(error)
    held.clock.advance(30.0)
    assert len(held.deposits.calls) == 2


def test_own_shares_are_kept_until_the_channel_ends() -> None:
    alice, _ = make_pair()
    store = MetaDict()
    shares = OwnShares(store)
    # Before any record: version 0's balances are the deposits; after a payment, unknown.
    assert shares.share(alice) == ((ETH, 10 * ETHER),)
    assert shares.share(_updated(alice)) is None
    shares.record(_funding(alice))
    assert shares.share(_updated(alice)) == ((ETH, 10 * ETHER),)
    shares.observe(ChannelNotice(_updated(alice), ev.Opened(alice.channel_id)))
    assert shares.share(_updated(alice)) is not None  # open: kept
    closed = _updated(alice).evolve(phase=ChannelPhase.CLOSED)
    shares.observe(ChannelNotice(closed, ev.Opened(alice.channel_id)))
    assert store.values == {}
    # At an open, the shares of channels gone (retired, closed) are dropped.
    shares.record(_funding(alice))
    shares.prune(lambda cid: cid == alice.channel_id)
    assert len(store.values) == 1
    shares.prune(lambda cid: False)
    assert store.values == {}
    # A damaged record is no share.
    store.values["deposit:" + alice.channel_id.hex()] = b"[not json"
    with capturedLogs() as events:
        assert shares.share(_updated(alice)) is None
    assert [e["log_level"] for e in events] == [LogLevel.warn]
