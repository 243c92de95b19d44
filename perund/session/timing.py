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
