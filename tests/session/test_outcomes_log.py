"""What the session's outcomes log for an operator: a registered state names the end of its
challenge period as a UTC time, and keeps the chain's unix seconds as a field."""

from __future__ import annotations

from typing import Any, cast

from twisted.logger import capturedLogs, formatEvent

from perund.channel import events as ev
from perund.session.notices import Notice
from perund.session.outcomes import Outcomes
from perund.session.payouts import Payouts
from perund.storage import MemoryStore
from tests.channel.factories import make_pair


def test_a_dispute_says_when_its_challenge_period_ends_in_utc() -> None:
    channel, _ = make_pair()
    notices: list[Notice] = []
    outcomes = Outcomes(links=cast(Any, None), channels={channel.channel_id: channel},
                        by_peer={}, notify=notices.append, funding_error=lambda _: None,
                        payouts=Payouts(MemoryStore()))
    with capturedLogs() as events:
        outcomes.disputed(ev.Disputed(channel.channel_id, 4, 1_796_000_000))
    (event,) = events
    assert formatEvent(event) == (
        f"channel 0x{channel.channel_id.hex()}: version 4 is registered on-chain; the "
        "challenge period ends 2026-11-30T00:53:20Z")
    assert event["timeout"] == 1_796_000_000  # for machines, as the chain has it
    assert len(notices) == 1
