"""A forced close of a channel held because the chain lost the peer's deposit
(perund.session.held_close): refused until the user accepts the terms of an underfunded channel,
saying what the user would get back (the peer's payments forfeited, or ours coming back);
refused whatever the user says while our own share is missing or unknown, for a channel that
locks virtual channels, or when nothing of ours would come back; taken by a client only with
that word, never by the patience with an unreachable peer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import cast

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent

from perund.chain.backend import ChainBackend
from perund.chain.results import ChannelStatus, Phase
from perund.channel import events as ev
from perund.channel.phases import Phase as ChannelPhase
from perund.channel.records import Channel
from perund.channel.types import ETH, Address, ChannelID, SubAlloc
from perund.errors import FailedPrecondition
from perund.session.chain_check import Shortfall
from perund.session.held_close import HeldCloses, deposits_back, forced_close_refusal
from perund.session.missing_deposits import Hold, Lack, MissingDeposits, OwnShares
from tests.channel.factories import ETHER, TOKEN, make_pair, make_request
from tests.session.fakes import MetaDict, Net, Side, open_channel, result, side


def _hold(channel: Channel, ours: int | None, ours_held: int | None, held: int) -> Hold:
    """`channel` held: the chain holds `held` of its ETH, `ours_held` of it our deposit;
    `ours` of the shortfall is our share (None: unknown)."""
    expected = sum(channel.latest.balances[0])
    return Hold((Lack(Shortfall(channel.channel_id, channel.peer, ETH, expected, held),
                      ours, ours_held),))


def _paid(channel: Channel, amount: int) -> Channel:
    """`channel` after its peer paid us `amount` (negative: we paid the peer)."""
    assert channel.current is not None
    state = channel.current.state
    row = list(state.balances[0])
    row[channel.index] += amount
    row[channel.peer_index] -= amount
    moved = replace(state, version=state.version + 1, balances=(tuple(row),))
    return channel.evolve(current=replace(channel.current, state=moved))


def _refusal(channel: Channel, hold: Hold, accepted: bool = False) -> FailedPrecondition | None:
    held_refusal = FailedPrecondition("the chain no longer holds this channel's deposits.")
    refused = forced_close_refusal(channel, hold, accepted, lambda _: ("ETH", 18), held_refusal)
    assert refused is None or isinstance(refused, FailedPrecondition)
    return refused


def test_the_peers_payments_to_us_are_forfeited_and_said_so() -> None:
    alice, _ = make_pair()  # 10 ETH each
    channel = _paid(alice, 2 * ETHER)  # 12 / 8
    hold = _hold(channel, 0, 10 * ETHER, 10 * ETHER)  # the peer's 10 ETH gone
    assert deposits_back(channel, hold) == ((ETH, 10 * ETHER),)
    refused = _refusal(channel, hold)
    assert refused is not None and refused.code == 204
    assert refused.message.startswith(
        "the chain no longer holds the peer's deposit in this channel (20 ETH expected, "
        "10 ETH held). A forced close now pays each side back exactly what it deposited, not "
        "its balance")
    assert ("you would get back 10 ETH (your balance is 12 ETH: the 2 ETH the peer paid you "
            "is forfeited)") in refused.message
    assert "give acceptDepositsBack: true with force" in refused.message
    assert refused.data["depositsBack"] == {"ETH": "10 ETH"}
    assert _refusal(channel, hold, accepted=True) is None


def test_our_payments_to_the_peer_come_back_and_that_is_said_too() -> None:
    alice, _ = make_pair()
    channel = _paid(alice, -4 * ETHER)  # 6 / 14
    refused = _refusal(channel, _hold(channel, 0, 10 * ETHER, 10 * ETHER))
    assert refused is not None
    assert ("you would get back 10 ETH (your balance is 6 ETH: the 4 ETH you paid the peer "
            "comes back to you)") in refused.message


@pytest.mark.parametrize(("ours", "why"), [
    (5 * ETHER, "our share is being deposited again first"),
    (None, "cannot tell whose share is missing"),
])
def test_with_our_share_missing_or_unknown_no_word_of_the_user_closes_it(
        ours: int | None, why: str) -> None:
    alice, _ = make_pair()
    hold = _hold(alice, ours, None if ours is None else 5 * ETHER, 5 * ETHER)
    assert deposits_back(alice, hold) is None
    for accepted in (False, True):
        refused = _refusal(alice, hold, accepted)
        assert refused is not None and why in refused.message, refused
        assert refused.message.startswith("the chain no longer holds this channel's deposits.")


def test_a_held_ledger_that_locks_virtual_channels_does_not_close_by_force() -> None:
    alice, _ = make_pair()
    assert alice.current is not None
    state = alice.current.state
    locked = replace(state, balances=((9 * ETHER, 10 * ETHER),),
                     locked=(SubAlloc(ChannelID(b"\x11" * 32), (ETHER,)),))
    channel = alice.evolve(current=replace(alice.current, state=locked))
    refused = _refusal(channel, _hold(channel, 0, 10 * ETHER, 10 * ETHER), accepted=True)
    assert refused is not None and "locks funds for virtual channels is not supported" \
        in refused.message


def test_nothing_of_ours_to_get_back_is_no_reason_to_close() -> None:
    alice, _ = make_pair()
    channel = _paid(alice, 10 * ETHER)  # 20 / 0: the peer paid us all it had
    refused = _refusal(channel, _hold(channel, 0, 0, 0), accepted=True)
    assert refused is not None and "would pay you nothing" in refused.message


def test_a_token_channel_pays_back_per_asset_the_deposit_where_short_the_balance_elsewhere(
        ) -> None:
    alice, _ = make_pair(make_request(assets=(ETH, TOKEN),
                                      balances=((3 * ETHER, ETHER), (5_000_000, 2_000_000))))
    assert alice.current is not None
    state = alice.current.state  # then the peer paid us 1 TKN: 6 / 1 TKN
    channel = alice.evolve(current=replace(alice.current, state=replace(
        state, version=1, balances=(state.balances[0], (6_000_000, 1_000_000)))))
    # Only the token lacks the peer's share; ETH is all there and follows the state.
    hold = Hold((Lack(Shortfall(channel.channel_id, channel.peer, TOKEN, 7_000_000, 5_000_000,
                                lambda asset: ("TKN", 6) if asset == TOKEN else ("ETH", 18)),
                      0, 5_000_000),))
    assert deposits_back(channel, hold) == ((ETH, 3 * ETHER), (TOKEN, 5_000_000))
    refused = forced_close_refusal(
        channel, hold, False, lambda asset: ("TKN", 6) if asset == TOKEN else ("ETH", 18),
        FailedPrecondition("held."))
    assert refused is not None
    assert ("you would get back 3 ETH (your balance); 5 TKN (your balance is 6 TKN: the 1 TKN "
            "the peer paid you is forfeited)") in refused.message
    assert refused.data["depositsBack"] == {"ETH": "3 ETH", "TKN": "5 TKN"}


def test_a_held_channel_settling_is_released_without_saying_it_takes_updates() -> None:
    _, alice, _, cid, missing = _held_pair()
    alice.client.force_close(cid, accept_deposits_back=True)
    with capturedLogs() as events:
        result(missing.check())
    assert missing.held == {}
    [line] = [formatEvent(e) for e in events if "no longer held" in formatEvent(e)]
    assert "is settling on-chain: it is no longer held" in line
    assert not any("takes updates again" in formatEvent(e) for e in events)


class _Chain:
    """Holds `held` of each channel's ETH (ours, the peer's by participant index)."""

    def __init__(self, held: tuple[int, int]) -> None:
        self.held = held

    async def channel_holdings(self, channels: Sequence[tuple[ChannelID, Sequence[Address]]]
                               ) -> list[tuple[int, ...]]:
        return [(sum(self.held),) for _ in channels]

    async def channel_funds(self, channels: Sequence[tuple[ChannelID, Sequence[Address]]]
                            ) -> list[tuple[ChannelStatus, tuple[int, ...]]]:
        status = ChannelStatus(Phase.NONE, 0, 0, b"\0" * 32)
        return [(status, (sum(self.held),)) for _ in channels]

    async def holdings(self, channel_id: ChannelID, asset: Address) -> tuple[int, int]:
        return self.held


def _held_pair() -> tuple[Net, Side, Side, ChannelID, MissingDeposits]:
    """alice (5 ETH) and bob (3 ETH), bob paid alice 1 ETH; alice's session holds the channel
    for bob's lost deposit."""
    net = Net(Clock())
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob)
    paid = bob.client.send(cid, ((ETH, ETHER),))
    net.clock.advance(0)
    result(paid)
    channel = alice.client.channels[cid]
    store = MetaDict()
    store.set_meta("deposit:" + cid.hex(), json.dumps([["0x" + ETH.hex(), str(5 * ETHER)]])
                   .encode())
    held = (5 * ETHER, 0) if channel.index == 0 else (0, 5 * ETHER)
    missing = MissingDeposits(net.clock, cast(ChainBackend, _Chain(held)),
                              lambda: alice.client.channels.values(), session_id="ab" * 16,
                              shares=OwnShares(store), channel=alice.client.channels.get)
    result(missing.check())
    alice.client.holds = HeldCloses(missing, lambda _: ("ETH", 18), alice.client.channels.get)
    return net, alice, bob, cid, missing


def test_a_client_closes_a_held_channel_by_force_only_on_the_users_word() -> None:
    _, alice, _, cid, _ = _held_pair()
    client = alice.client
    assert client.holds is not None
    assert client.holds.deposits_back(client.channels[cid]) == ((ETH, 5 * ETHER),)
    with pytest.raises(FailedPrecondition, match="the 1 ETH the peer paid you is forfeited"):
        result(client.force_close(cid))
    with pytest.raises(FailedPrecondition, match="closes only by force"):
        result(client.close(cid))
    assert client.channels[cid].phase is ChannelPhase.OPEN
    assert alice.chain.asked == []
    client.force_close(cid, accept_deposits_back=True)
    assert client.channels[cid].phase is not ChannelPhase.OPEN
    [register] = alice.chain.asked
    assert isinstance(register, ev.Register) and register.state.version == 1
    assert client.holds.deposits_back(client.channels[cid]) is None  # settling now


def test_the_patience_with_an_unreachable_peer_leaves_a_held_channel_to_the_user() -> None:
    net, alice, bob, cid, _ = _held_pair()
    client = alice.client
    net.cut(bob.address)
    with capturedLogs() as events:
        client.watch_peers(10.0)
        for _ in range(30):
            net.clock.advance(1.0)
    assert client.channels[cid].phase is ChannelPhase.OPEN
    assert alice.chain.asked == []
    assert any(e["log_level"] == LogLevel.warn and "not settling it on-chain although its peer "
               "is unreachable" in formatEvent(e) for e in events)
