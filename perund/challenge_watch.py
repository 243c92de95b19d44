"""Whether the chain answers fast enough for the open channels' challenge durations.

A channel's challenge duration is checked against the node's reaction time when it opens
(`min_challenge_duration`: a poll, the confirmation depth and a transaction's timeout, three
times over). That leaves out how long the chain node takes to answer: answering a dispute is
about `DISPUTE_CALLS` JSON-RPC calls one after another (the poll's reads, the channel's status,
the nonce, the fee, the gas estimate, the send, the receipt polls). In a review against a proxy
that slowed every call to 4 s, a refutation took 40 s, more than the 30.6 s minimum of that
node's configuration. So the node adds the latest calls' 90th percentile, `DISPUTE_CALLS`
times, to its reaction time, and counts the open channels whose challenge duration is less
than `SAFETY` times that (a margin below the opening's three, so that a healthy chain's
milliseconds put no channel at risk): the gauge `perund_channels_challenge_at_risk`, and a
warning when that count rises. The operator then needs a faster chain endpoint: a challenge
duration is fixed when its channel opens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from perund.chain.call_times import ChainCallTimes
from perund.channel.phases import TERMINAL, Phase
from perund.config import NodeConfig
from perund.session.session import Session, reaction_time

log = Logger(namespace="perund.node")

DISPUTE_CALLS: Final = 10
"""JSON-RPC calls one after another from a registration seen to our answer mined (measured)."""

SAFETY: Final = 2.0
"""A channel is at risk when its challenge duration is less than this many reaction times
(the opening asks for three, `MIN_CHALLENGE_MARGIN`)."""

CHECK_INTERVAL: Final = 30.0
"""Seconds between two checks (the gauge is also worked out at every scrape)."""


class ChallengeWatch:
    """Counts the open channels of `sessions` whose challenge duration the chain's current
    answering time puts at risk (see the module), and warns when there are more."""

    def __init__(self, reactor: Any, config: NodeConfig, call_times: ChainCallTimes,
                 sessions: Mapping[str, Session]) -> None:
        self._reactor = reactor
        self._config = config
        self._call_times = call_times
        self._sessions = sessions
        self._warned = 0
        self._loop: LoopingCall | None = None

    def start(self) -> None:
        """Check every `CHECK_INTERVAL` seconds from now on."""
        if self._loop is None:
            self._loop = LoopingCall(self.check)
            self._loop.clock = self._reactor
            self._loop.start(CHECK_INTERVAL, now=False)

    def stop(self) -> None:
        """No more checks."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def reaction(self) -> float | None:
        """Seconds the node would now take to answer a dispute (see the module); None before
        the chain answered anything."""
        call = self._call_times.recent_p90()
        if call is None:
            return None
        return reaction_time(self._config) + DISPUTE_CALLS * call

    def at_risk(self) -> int:
        """Open channels whose challenge duration is less than `SAFETY` reaction times (a
        channel between two sessions of this node counts once)."""
        reaction = self.reaction()
        if reaction is None:
            return 0
        floor = SAFETY * reaction
        return len({channel.channel_id for session in self._sessions.values()
                    for channel in session.client.channels.values()
                    if channel.phase is not Phase.PROPOSING and channel.phase not in TERMINAL
                    and channel.params.challenge_duration < floor})

    def check(self) -> None:
        """Warn when more channels are at risk than at the last warning; say when none is."""
        count = self.at_risk()
        if count > self._warned:
            self._warned = count
            reaction = self.reaction() or 0.0
            log.warn("the chain answers slowly (90 % of the latest calls within {call:.2f} s): "
                     "answering a dispute could take {reaction:.0f} s, and {count} open "
                     "channel(s) have a challenge duration under {floor:.0f} s; use a faster "
                     "chain endpoint (chain.url)", call=self._call_times.recent_p90() or 0.0,
                     reaction=reaction, count=count, floor=SAFETY * reaction)
        elif count == 0 and self._warned:
            self._warned = 0
            log.info("the chain answers fast enough again for every open channel's challenge "
                     "duration")
