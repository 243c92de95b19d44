"""The node's watch over its chain's answering time against the open channels' challenge
durations (perund.challenge_watch): the estimate, the channels it counts, and the warnings."""

from __future__ import annotations

import itertools
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from eth_hash.auto import keccak
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from perund.chain.call_times import RECENT_CALLS, ChainCallTimes
from perund.challenge_watch import CHECK_INTERVAL, DISPUTE_CALLS, ChallengeWatch
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.types import ChannelID
from perund.config import ChainConfig, NodeConfig, Timeouts
from perund.session.session import min_challenge_duration, reaction_time
from tests.channel.factories import make_pair

CONFIG = NodeConfig(chain=ChainConfig(poll_interval=1.0, block_time=12.0, confirmations=0),
                    timeouts=Timeouts(tx=10.0))
MINIMUM = min_challenge_duration(CONFIG)  # 3 * (1 + 10) = 33 s


_made = itertools.count()


def channel(challenge_duration: int, phase: Phase = Phase.OPEN) -> Channel:
    """Alice's side of a channel of its own (another ID at each call)."""
    alice, _ = make_pair()
    params = replace(alice.params, challenge_duration=challenge_duration)
    return replace(alice, channel_id=ChannelID(keccak(b"%d" % next(_made))), params=params,
                   phase=phase)


def watch_over(*channels: Channel, sessions: int = 1,
               ) -> tuple[ChallengeWatch, ChainCallTimes, Clock]:
    """A watch over `sessions` sessions, each holding `channels`."""
    clock = Clock()
    times = ChainCallTimes()
    held: dict[str, Any] = {
        f"s{i}": SimpleNamespace(client=SimpleNamespace(
            channels={c.channel_id: c for c in channels})) for i in range(sessions)}
    return ChallengeWatch(clock, CONFIG, times, held), times, clock


def test_a_channel_between_two_sessions_of_the_node_counts_once() -> None:
    watch, times, _ = watch_over(channel(MINIMUM), channel(MINIMUM), sessions=2)
    calls(times, 4.0)
    assert watch.at_risk() == 2


def calls(times: ChainCallTimes, seconds: float) -> None:
    for _ in range(RECENT_CALLS):
        times.add(seconds)


def test_a_healthy_chain_puts_no_channel_at_the_minimum_at_risk() -> None:
    watch, times, _ = watch_over(channel(MINIMUM), channel(3600))
    assert watch.reaction() is None and watch.at_risk() == 0  # nothing asked yet
    calls(times, 0.005)
    assert watch.reaction() == reaction_time(CONFIG) + DISPUTE_CALLS * 0.005
    assert watch.at_risk() == 0


def test_slow_calls_put_the_short_challenges_at_risk_and_warn_once() -> None:
    watch, times, clock = watch_over(
        channel(MINIMUM), channel(100), channel(3600),
        channel(MINIMUM, Phase.PROPOSING), channel(MINIMUM, Phase.CLOSED),
        channel(MINIMUM, Phase.DISPUTED))
    calls(times, 4.0)  # 11 + 40 = 51 s to answer a dispute: under 102 s is at risk
    assert watch.reaction() == 51.0
    assert watch.at_risk() == 3  # the open 33 s and 100 s, the disputed 33 s
    watch.start()
    with capturedLogs() as events:
        clock.advance(CHECK_INTERVAL)
        clock.advance(CHECK_INTERVAL)  # the same count: said once
    [warning] = [formatEvent(e) for e in events]
    assert warning == ("the chain answers slowly (90 % of the latest calls within 4.00 s): "
                       "answering a dispute could take 51 s, and 3 open channel(s) have a "
                       "challenge duration under 102 s; use a faster chain endpoint "
                       "(chain.url)")
    calls(times, 0.01)
    with capturedLogs() as events:
        clock.advance(CHECK_INTERVAL)
    assert [formatEvent(e) for e in events] == [
        "the chain answers fast enough again for every open channel's challenge duration"]
    watch.stop()
    with capturedLogs() as events:
        clock.advance(10 * CHECK_INTERVAL)
    assert events == []


def test_the_recent_calls_decide_not_the_whole_history() -> None:
    times = ChainCallTimes()
    for _ in range(1000):
        times.add(0.002)
    for _ in range(RECENT_CALLS // 5):
        times.add(3.0)  # a fifth of the latest: above the 90th percentile
    assert times.recent_p90() == 3.0
    assert times.histogram().count == 1000 + RECENT_CALLS // 5
    for _ in range(RECENT_CALLS):
        times.add(0.002)
    assert times.recent_p90() == 0.002
