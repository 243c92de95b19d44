"""How long a channel client waits, shared by its parts and read when a wait starts (so that a
change, the operator's or a test's, counts from the next wait on)."""

from __future__ import annotations

from dataclasses import dataclass


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
