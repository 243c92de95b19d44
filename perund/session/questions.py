"""Questions for our user: a peer's proposal, or a peer's update that needs an answer.

Rules, stated once:

- each question waits for the user's answer until its expiry (`Timing.response_timeout` after
  it arrived); at the expiry a proposal is rejected to its peer and an update is declined
  (`UserTimedOut`, fed to the core by the client);
- at most `MAX_PROPOSALS_PER_PEER` proposals of one peer wait at once; more are rejected at
  once (a contact flooding us would otherwise hold memory and timers);
- every waiting question is recorded in the store (`perund.session.pending`) until it is
  answered, expires or is withdrawn, so that a restart forgets none: what a restart ended is
  told to the user as a `GoneNotice`;
- a proposal seen before (waiting, answered, or expired: the last `MAX_REMEMBERED_ANSWERS`
  and `MAX_REMEMBERED_EXPIRIES`) is not asked again: a replayed or duplicated one is dropped;
- an answer that comes too late is told why: the question expired (UserResponseTimedOut, for
  the last `MAX_REMEMBERED_EXPIRIES`), or a restart ended it (FailedPrecondition); otherwise
  the question never existed (ResourceNotFound).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.base import DelayedCall
from twisted.logger import Logger

from perund.channel import events as ev
from perund.channel.records import Channel
from perund.channel.types import Address, ChannelID
from perund.errors import FailedPrecondition, ResourceNotFound, UserResponseTimedOut
from perund.peer.manager import undelivered
from perund.session.notices import GoneNotice, Notice, ProposalNotice, UpdateNotice
from perund.session.pending import GONE_AT_RESTART, QuestionRecords
from perund.session.ports import PeerLinks
from perund.session.timing import Timing
from perund.wire.messages import Propose, Reject, VirtualPropose

log = Logger(namespace="perund.client")

MAX_REMEMBERED_EXPIRIES: Final = 1024
"""Expired questions remembered to answer late responses with UserResponseTimedOut."""

MAX_REMEMBERED_ANSWERS: Final = 1024
"""Answered proposals remembered so that a replay of one is not asked again."""

MAX_PROPOSALS_PER_PEER: Final = 32
"""Proposals from one peer that may wait for our user's answer at once."""


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


@dataclass(slots=True)
class IncomingProposal:
    """A peer's proposal waiting for our user."""

    peer: Address
    proposal: Propose | VirtualPropose
    expiry: float
    timer: DelayedCall


@dataclass(slots=True)
class _UpdateQuestion:
    channel_id: ChannelID
    expiry: float
    timer: DelayedCall


class Questions:
    """The questions waiting for our user, their expiry and their records (module doc).

    `notify` tells the observers; `time_out_update(channel_id, update_id)` declines an update
    the user did not answer in time (the client feeds `UserTimedOut` to the core).
    """

    def __init__(self, reactor: Any, *, links: PeerLinks, timing: Timing,
                 records: QuestionRecords, notify: Callable[[Notice], None],
                 time_out_update: Callable[[ChannelID, bytes], None]) -> None:
        self._reactor = reactor
        self._links = links
        self._timing = timing
        self._records = records
        self._notify = notify
        self._time_out_update = time_out_update
        self._proposals: dict[bytes, IncomingProposal] = {}
        self._proposals_from: dict[Address, int] = {}
        self._updates: dict[bytes, _UpdateQuestion] = {}
        self._expired: dict[bytes, float] = {}
        """Questions that expired unanswered (id → expiry), so a late answer is told it came
        too late rather than that the question never existed."""
        self._gone: set[bytes] = set()
        """Questions a restart ended unanswered (told with a `GoneNotice`)."""
        self._answered: dict[bytes, None] = {}
        """Proposals our user answered (the last `MAX_REMEMBERED_ANSWERS`), oldest first."""

    # -- proposals ------------------------------------------------------------------------------

    def seen(self, proposal_id: bytes) -> bool:
        """Whether the proposal `proposal_id` waits for our user, or did lately (answered or
        expired): a replay of it is not a new question."""
        return proposal_id in self._proposals or proposal_id in self._answered \
            or proposal_id in self._expired

    def ask_proposal(self, peer: Address, msg: Propose | VirtualPropose) -> None:
        """A valid proposal arrived: ask the user, or reject it if its peer has too many
        waiting already."""
        waiting = self._proposals_from.get(peer, 0)
        if waiting >= MAX_PROPOSALS_PER_PEER:
            if self._links.refused(peer):
                log.warn("refused proposal {proposal_id} from {peer}: {count} of its "
                         "proposals wait for an answer already",
                         proposal_id=_hex(msg.proposal_id), peer=_hex(peer), count=waiting)
            self._links.send(peer, Reject(
                msg.proposal_id, f"{waiting} of your proposals wait for an answer already"),
            ).addErrback(undelivered)
            return
        expiry = self._reactor.seconds() + self._timing.response_timeout
        timer = self._reactor.callLater(self._timing.response_timeout, self._proposal_expired,
                                        msg.proposal_id)
        self._proposals[msg.proposal_id] = IncomingProposal(peer, msg, expiry, timer)
        self._proposals_from[peer] = waiting + 1
        self._records.asked("proposal", msg.proposal_id, peer, None, expiry)
        self._notify(ProposalNotice(peer, msg, expiry))

    def proposal(self, proposal_id: bytes) -> Propose | VirtualPropose:
        """The waiting proposal `proposal_id`; if none waits, the error `take_proposal` would
        give (a late answer, one the last stop ended, or ResourceNotFound)."""
        pending = self._proposals.get(proposal_id)
        if pending is None:
            if proposal_id in self._expired:
                raise self._late(proposal_id)
            if proposal_id in self._gone:
                raise self._gone_error("proposal", proposal_id)
            raise ResourceNotFound("no such proposal", type="proposal", id=_hex(proposal_id))
        return pending.proposal

    def take_proposal(self, proposal_id: bytes) -> IncomingProposal:
        """The waiting proposal the user answers now, no longer waiting; the error to tell the
        user if there is none."""
        pending = self._take_proposal(proposal_id)
        if pending is None:
            if proposal_id in self._expired:
                raise self._late(proposal_id)
            if proposal_id in self._gone:
                raise self._gone_error("proposal", proposal_id)
            raise ResourceNotFound("no such proposal", type="proposal", id=_hex(proposal_id))
        pending.timer.cancel()
        if len(self._answered) >= MAX_REMEMBERED_ANSWERS:
            del self._answered[next(iter(self._answered))]
        self._answered[proposal_id] = None
        return pending

    def _take_proposal(self, proposal_id: bytes) -> IncomingProposal | None:
        pending = self._proposals.pop(proposal_id, None)
        if pending is not None:
            self._records.settled(proposal_id)
            left = self._proposals_from.pop(pending.peer, 1) - 1
            if left:
                self._proposals_from[pending.peer] = left
        return pending

    def _proposal_expired(self, proposal_id: bytes) -> None:
        pending = self._take_proposal(proposal_id)
        if pending is not None:
            self._remember_expiry(proposal_id, pending.expiry)
            log.info("proposal {proposal_id} from {peer} expired unanswered",
                     proposal_id=_hex(proposal_id), peer=_hex(pending.peer))
            self._links.send(pending.peer, Reject(proposal_id, "the user did not answer in time")
                             ).addErrback(undelivered)

    # -- updates --------------------------------------------------------------------------------

    def ask_update(self, channel: Channel, e: ev.UpdateNeedsUser) -> None:
        """The peer's update `e` awaits our user's answer."""
        expiry = self._reactor.seconds() + self._timing.response_timeout
        timer = self._reactor.callLater(self._timing.response_timeout, self._update_expired,
                                        e.update_id)
        self._updates[e.update_id] = _UpdateQuestion(e.channel_id, expiry, timer)
        self._records.asked("update", e.update_id, channel.peer, e.channel_id, expiry)
        self._notify(UpdateNotice(channel, e.update_id, e.kind, expiry, e))

    def take_update(self, channel_id: ChannelID, update_id: bytes) -> None:
        """The user answers the update question `update_id` now: it no longer waits. Raises
        what to tell the user if it is not waiting, or if its expiry has passed."""
        question = self._updates.get(update_id)
        if question is None or question.channel_id != channel_id:
            if question is None and update_id in self._expired:
                raise self._late(update_id)
            if question is None and update_id in self._gone:
                raise self._gone_error("update", update_id)
            raise ResourceNotFound("no such update awaits an answer", type="update",
                                   id=_hex(update_id))
        del self._updates[update_id]
        self._records.settled(update_id)
        question.timer.cancel()
        if self._reactor.seconds() >= question.expiry:
            raise UserResponseTimedOut("the answer came after the expiry",
                                       expiry=question.expiry,
                                       receivedAt=self._reactor.seconds())

    def withdrawn(self, update_id: bytes) -> None:
        """The update no longer awaits an answer (the peer synced, the channel settles)."""
        question = self._updates.pop(update_id, None)
        if question is not None:
            self._records.settled(update_id)
            if question.timer.active():
                question.timer.cancel()

    def _update_expired(self, update_id: bytes) -> None:
        question = self._updates.pop(update_id, None)
        if question is not None:
            self._records.settled(update_id)
            self._remember_expiry(update_id, question.expiry)
            self._time_out_update(question.channel_id, update_id)

    # -- restarts -------------------------------------------------------------------------------

    def stop(self) -> list[tuple[ChannelID, bytes]]:
        """The node stops: waiting proposals are rejected to their peers at once (who would
        otherwise wait for their expiry); the update questions, to decline, are returned.
        Their records stay, so that the user learns of them at the next start."""
        for proposal_id, pending in self._proposals.items():
            if pending.timer.active():
                pending.timer.cancel()
            stopped = Reject(proposal_id, "the node stopped before its user answered")
            self._links.send(pending.peer, stopped).addErrback(undelivered)
        updates = []
        for update_id, question in self._updates.items():
            if question.timer.active():
                question.timer.cancel()
            updates.append((question.channel_id, update_id))
        self._proposals.clear()
        self._proposals_from.clear()
        self._updates.clear()
        return updates

    def tell_gone(self, channels: Mapping[ChannelID, Channel]) -> None:
        """Tell the user of the questions the last stop ended unanswered (once)."""
        for question in self._records.left_over():
            self._gone.add(question.question_id)
            about = None if question.channel_id is None else channels.get(question.channel_id)
            self._notify(GoneNotice(question.kind, question.question_id, question.peer, about,
                                    GONE_AT_RESTART))

    # -- late answers ---------------------------------------------------------------------------

    def _remember_expiry(self, key: bytes, expiry: float) -> None:
        if len(self._expired) >= MAX_REMEMBERED_EXPIRIES:
            del self._expired[next(iter(self._expired))]
        self._expired[key] = expiry

    def _late(self, key: bytes) -> UserResponseTimedOut:
        return UserResponseTimedOut("the answer came after the expiry", expiry=self._expired[key],
                                    receivedAt=self._reactor.seconds())

    @staticmethod
    def _gone_error(kind: str, key: bytes) -> FailedPrecondition:
        return FailedPrecondition(f"this {kind} is gone: the node restarted before it was "
                                  "answered (the peer was told it was rejected, or its own "
                                  "wait ran out)", type=kind, id=_hex(key))
