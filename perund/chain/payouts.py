"""What the Adjudicator says it paid: its `PaidOut` events as the channel core's payouts."""

from __future__ import annotations

from collections.abc import Iterable

from perund.chain.results import ChainEvent
from perund.channel.changes import Payout
from perund.channel.types import Address


def payouts_of(events: Iterable[ChainEvent]) -> tuple[Payout, ...]:
    """The `PaidOut` events among `events`, as payouts (`pushed`: sent; else credited for a
    `withdraw`)."""
    return tuple(Payout(Address(bytes(e.args["receiver"])), Address(bytes(e.args["asset"])),
                        int(e.args["amount"]), bool(e.args["pushed"]))
                 for e in events if e.name == "PaidOut")
