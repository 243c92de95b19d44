"""How long a channel client waits, shared by its parts and read when a wait starts (so that a
change, the operator's or a test's, counts from the next wait on)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.base import DelayedCall

from perund.channel.types import ChannelID


@dataclass(slots=True)
class Timing:
    """The waits of one client, in seconds."""

    response_timeout: float = 60.0
    """How long our user has to answer a peer's question, and a peer's user ours."""
    request_timeout: float = 10.0
    """How long a peer's node has to answer a request, on top of its user's time."""
    settle_retry_delay: float = 5.0
    """Before a settlement transaction that failed for a passing reason is sent again (the
    n-th retry waits n times as long, at most `duties.SETTLE_RETRY_CAP`)."""


class TimingKnobs:
    """The waits as attributes of their owner (the channel client), shared with its parts:
    changing one counts from the next wait on."""

    timing: Timing

    @property
    def response_timeout(self) -> float:
        """Seconds a user has to answer a question (ours, and the peer's)."""
        return self.timing.response_timeout

    @response_timeout.setter
    def response_timeout(self, seconds: float) -> None:
        self.timing.response_timeout = seconds

    @property
    def request_timeout(self) -> float:
        """Seconds a peer's node has to answer a request, on top of its user's time."""
        return self.timing.request_timeout

    @request_timeout.setter
    def request_timeout(self, seconds: float) -> None:
        self.timing.request_timeout = seconds


class VersionZeroWaits:
    """The channels we accepted (ledger or virtual) that wait for the proposer's signature on
    version 0: each for as long as the proposer gave us to answer (response and request
    timeouts, read when the wait starts), then `expired(channel_id)` is called, which checks
    whether the channel still waits and closes it if so."""

    def __init__(self, reactor: Any, timing: Timing,
                 expired: Callable[[ChannelID], None]) -> None:
        self._reactor = reactor
        self._timing = timing
        self._expired = expired
        self._waits: dict[ChannelID, DelayedCall] = {}

    @property
    def patience(self) -> float:
        """Seconds a wait starting now lasts."""
        return self._timing.response_timeout + self._timing.request_timeout

    def start(self, channel_id: ChannelID) -> None:
        """Wait for the channel's version 0 (once: a channel already waiting goes on)."""
        if channel_id not in self._waits:
            self._waits[channel_id] = self._reactor.callLater(self.patience, self._over,
                                                              channel_id)

    def signed(self, channel_id: ChannelID) -> None:
        """The proposer's signature on version 0 came: the wait ends."""
        wait = self._waits.pop(channel_id, None)
        if wait is not None and wait.active():
            wait.cancel()

    def stop(self) -> None:
        """Cancel every wait (the next start waits again, or closes the channel)."""
        for wait in self._waits.values():
            if wait.active():
                wait.cancel()
        self._waits.clear()

    def _over(self, channel_id: ChannelID) -> None:
        self._waits.pop(channel_id, None)
        self._expired(channel_id)
