"""What a channel client tells its observers (the API's notification hub, a CLI, a test).

A notice is a frozen value pushed to every observer in turn; an observer that raises is logged
and the others still hear of it. The API and the node read these types without importing the
client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.logger import Logger

from perund.channel import events as ev
from perund.channel.records import Channel
from perund.channel.types import Address
from perund.wire.messages import Propose, VirtualPropose

log = Logger(namespace="perund.client")


@dataclass(frozen=True, slots=True)
class ProposalNotice:
    """A peer proposes a channel (a virtual one through its `intermediary`, for a
    `VirtualPropose`); answer with `respond_proposal` before `expiry`."""

    peer: Address
    proposal: Propose | VirtualPropose
    expiry: float


@dataclass(frozen=True, slots=True)
class UpdateNotice:
    """A peer's update awaits our user's answer (`respond_update`) before `expiry`."""

    channel: Channel
    update_id: bytes
    kind: ev.UpdateKind
    expiry: float
    proposed: ev.UpdateNeedsUser


@dataclass(frozen=True, slots=True)
class ChannelNotice:
    """Something happened to a channel: a new state, opened, disputed, closed, ..."""

    channel: Channel
    event: ev.Event


@dataclass(frozen=True, slots=True)
class GoneNotice:
    """A question our user was asked (a proposal, or an update awaiting an answer) is gone
    without an answer: the node restarted before the user gave one (`perund.session.pending`).
    `channel` is the channel an update was for (None for a proposal)."""

    kind: str
    question_id: bytes
    peer: Address
    channel: Channel | None
    reason: str


Notice = ProposalNotice | UpdateNotice | ChannelNotice | GoneNotice
"""What the client tells its observers."""

Observer = Callable[[Notice], object]


def tell(observers: list[Observer], notice: Notice) -> None:
    """Push `notice` to every observer (a copy of the list: an observer may remove itself)."""
    for observer in list(observers):
        try:
            observer(notice)
        except Exception:
            log.failure("an observer failed on {notice}", notice=type(notice).__name__)
