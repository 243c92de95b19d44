"""What the session's outcomes log for an operator: a registered state names the end of its
challenge period as a UTC time, and keeps the chain's unix seconds as a field."""

from __future__ import annotations

from typing import Any, cast

from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

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


def test_a_registration_before_the_funding_says_what_is_known_and_blames_no_one() -> None:
    """The peer's node registered version 0 while our user waits for the channel to open (its
    deposit of a fee-charging token was refused, say): the user learns that, not that the
    peer failed to fund."""
    channel, _ = make_pair()
    outcomes = Outcomes(links=cast(Any, None), channels={channel.channel_id: channel},
                        by_peer={}, notify=lambda _: None, funding_error=lambda _: None,
                        payouts=Payouts(MemoryStore()))
    opening = outcomes.opened_later(channel.channel_id)
    errors: list[Failure] = []
    opening.addErrback(errors.append)
    with capturedLogs():
        outcomes.disputed(ev.Disputed(channel.channel_id, 0, 1_796_000_000))
    (error,) = errors
    message = error.getErrorMessage()
    assert message.startswith("the peer's node registered version 0 on-chain before the "
                              "channel was funded: its deposit did not go through"), message
    assert "comes back when the channel concludes" in message
