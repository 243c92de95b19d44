"""ChannelClient: ties the pure channel core to peer connections, storage and the chain.

The client is the imperative shell of DESIGN.md: it turns peer messages, user requests, timers
and chain news into core inputs (`perund.channel.changes`), runs `transition`, and executes the
events it returns, in order. A `Persist` is made durable (the store's `flush`, group commit
allowed) before any later event of the same transition runs, so no message that depends on a
write leaves before the write (PROTOCOL.md §5).

Everything runs on the reactor thread; transitions of one channel therefore never interleave.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from twisted.internet.base import DelayedCall
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from perund.channel import events as ev
from perund.channel.changes import (
    ChainLost,
    Change,
    Concluded,
    ForceClose,
    Funded,
    FundingExpired,
    OwnUpdate,
    RespondUpdate,
    Restored,
    StartSync,
    SyncReceived,
    UpdateAcceptReceived,
    UpdateReceived,
    UpdateRejectReceived,
    UpdateTimedOut,
    UserTimedOut,
)
from perund.channel.encoding import Signer, random_share
from perund.channel.machine import transition
from perund.channel.phases import TERMINAL, Phase
from perund.channel.proposal import (
    Deployment,
    OpenRequest,
    accept_proposal,
    complete_proposal,
    make_proposal,
    receive_proposal,
)
from perund.channel.records import Channel
from perund.channel.types import Address, ChannelID
from perund.errors import (
    ChainNotReachable,
    FailedPrecondition,
    InsufficientFunds,
    InvalidArgument,
    PeerNotFunded,
    PeerProtocolError,
    PeerRejected,
    PeerRequestTimedOut,
    PeerUnreachable,
    PerundError,
    ResourceNotFound,
    TxReverted,
    TxTimedOut,
    UserResponseTimedOut,
)
from perund.peer.manager import PeerManager
from perund.session.pending import GONE_AT_RESTART, QuestionRecords
from perund.storage import ChannelStore
from perund.wire.messages import (
    Accept,
    Message,
    Propose,
    Reject,
    Sync,
    Update,
    UpdateAccept,
    UpdateReject,
)

log = Logger(namespace="perund.client")

MAX_REMEMBERED_EXPIRIES: Final = 1024
"""Expired questions remembered to answer late responses with UserResponseTimedOut."""


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


class Funder(Protocol):
    """Puts our share of a new channel on-chain and reports when every share is there."""

    def fund(self, event: ev.Fund) -> Deferred[None]:
        """Deposit what `event` asks of us (skipping what is already held); fire once the
        contract holds every participant's share, fail with PeerNotFunded at the deadline."""


class Settler(Protocol):
    """Settles channels on-chain; each call fires with the conclusion the chain shows (with the
    payouts it reports, when they are known), or None when nothing is concluded yet (a
    registration: the dispute goes on)."""

    def conclude_final(self, event: ev.ConcludeFinal) -> Deferred[Concluded | None]:
        """Submit `concludeFinal` (or, when not primary, only if nobody else did soon)."""

    def register(self, event: ev.Register) -> Deferred[Concluded | None]:
        """Register the latest state (dispute or refutation)."""

    def conclude(self, event: ev.Conclude) -> Deferred[Concluded | None]:
        """Conclude the registered state once its challenge period is over."""


@dataclass(frozen=True, slots=True)
class ProposalNotice:
    """A peer proposes a channel; answer with `respond_proposal` before `expiry`."""

    peer: Address
    proposal: Propose
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
"""What the client tells its observers (the API's notification hub, a CLI, a test)."""

_OnChain = ev.Register | ev.ConcludeFinal | ev.Conclude

_SETTLE_RETRY_CAP: Final = 60.0
"""A settlement transaction that failed for a passing reason (the chain unreachable, the
transaction not mined in time, the account out of funds for gas) is sent again for as long as
the channel settles: the money depends on it. The wait grows to at most this many seconds."""

_RETRIES: Final = 3
"""How often an update refused for a reason that a higher version cures (both sides proposed at
once, or the peer already signed a state of that version) is proposed again."""

_RETRY_DELAY: Final = 0.01
"""Seconds participant 1 waits per attempt before retrying; participant 0 retries at once, so
after a collision the two retries do not collide again."""


_MAX_BATCH: Final = 256
"""At most this many waiting payments go out in one update."""

_MAX_WAITING: Final = 10_000
"""Sends waiting on one channel beyond this fail at once instead of piling up."""

MAX_PROPOSALS_PER_PEER: Final = 32
"""Proposals from one peer that may wait for our user's answer at once; more are rejected at
once (a contact flooding us with proposals would otherwise hold memory and timers)."""


@dataclass(slots=True)
class _Waiting:
    """A send waiting for its channel's update in flight to finish."""

    transfers: tuple[tuple[Address, int], ...]
    is_final: bool
    done: Deferred[Channel]
    attempt: int = 0
    """How often it was proposed before and refused in a way a higher version cures."""


def _is_payment(waiting: _Waiting) -> bool:
    """A plain payment, which the peer accepts without asking its user: safe to merge."""
    return not waiting.is_final and bool(waiting.transfers) and all(
        amount > 0 for _, amount in waiting.transfers)


def _merged(batch: list[_Waiting]) -> tuple[tuple[Address, int], ...]:
    if len(batch) == 1:
        return batch[0].transfers
    totals: dict[Address, int] = {}
    for waiting in batch:
        for asset, amount in waiting.transfers:
            totals[asset] = totals.get(asset, 0) + amount
    return tuple(totals.items())


def _fire_all(channel: Channel, batch: list[_Waiting]) -> None:
    for waiting in batch:
        waiting.done.callback(channel)


def _fail_all(failure: Failure, batch: list[_Waiting]) -> None:
    for waiting in batch:
        waiting.done.errback(failure)


class _Retry(Exception):
    """Our update was refused in a way a higher version cures; carries the user-facing error."""

    def __init__(self, error: PerundError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _IncomingProposal:
    peer: Address
    proposal: Propose
    expiry: float
    timer: DelayedCall


@dataclass
class _PendingQuestion:
    channel_id: ChannelID
    expiry: float
    timer: DelayedCall


class ChannelClient:
    """One user's channels: open, pay, request, answer, close; over authenticated peer links.

    `peers` must not be shared: the client installs its callbacks on it. `funder` and
    `settler` do the on-chain part; `is_contact` says whether a proposal's sender is known.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        signer: Signer,
        receiver: Address,
        peers: PeerManager,
        deployment: Deployment,
        store: ChannelStore,
        funder: Funder,
        settler: Settler,
        is_contact: Callable[[Address], bool],
        response_timeout: float = 60.0,
        request_timeout: float = 10.0,
        confirm_updates: bool = False,
        settle_retry_delay: float = 5.0,
        dispute_after: float | None = None,
    ) -> None:
        # Any: zope interfaces do not type-check as protocols without the mypy-zope plugin.
        self._reactor: Any = reactor
        self.signer = signer
        self.address: Address = signer.address
        self.receiver = receiver
        self.peers = peers
        self.deployment = deployment
        self.store = store
        self.funder = funder
        self.settler = settler
        self.is_contact = is_contact
        self.response_timeout = response_timeout
        self.request_timeout = request_timeout
        self.confirm_updates = confirm_updates
        self.settle_retry_delay = settle_retry_delay
        """Seconds before a settlement transaction that failed for a passing reason is sent
        again (the n-th retry waits n times as long)."""
        self.observers: list[Callable[[Notice], object]] = []
        self.channels: dict[ChannelID, Channel] = {}
        self._by_peer: dict[Address, set[ChannelID]] = {}
        self._incoming: dict[bytes, _IncomingProposal] = {}
        self._incoming_from: dict[Address, int] = {}
        self._questions: dict[bytes, _PendingQuestion] = {}
        self._update_waiters: dict[tuple[ChannelID, int], Deferred[Channel]] = {}
        self._open_waiters: dict[ChannelID, list[Deferred[Channel]]] = {}
        self._close_waiters: dict[ChannelID, list[Deferred[Channel]]] = {}
        self._unanswered: dict[tuple[ChannelID, int], PerundError] = {}
        self._funding_errors: dict[ChannelID, PerundError] = {}
        self._queues: dict[ChannelID, deque[_Waiting]] = {}
        self._funding: dict[ChannelID, Deferred[None]] = {}
        """Funding under way (deposits, then waiting for the peer's), per channel."""
        self.dispute_after: float | None = None
        self._unreachable_since: dict[Address, float] = {}
        self._patience: DelayedCall | None = None
        self._paused: set[ChannelID] = set()
        self._expired: dict[bytes, float] = {}
        """Proposals and update questions that expired unanswered (id → expiry), so a late
        answer is told it came too late rather than that the question never existed."""
        self._records = QuestionRecords(store)
        self._gone: set[bytes] = set()
        """Questions a restart ended unanswered (told with a `GoneNotice`), so that a late
        answer learns why."""
        self._handlers: dict[type, Callable[[Any], None]] = {
            ev.SendAccept: self._send_accept,
            ev.SendReject: self._send_reject,
            ev.SendUpdate: self._send_update,
            ev.SendUpdateAccept: self._send_update_accept,
            ev.SendUpdateReject: self._send_update_reject,
            ev.SendSync: self._send_sync,
            ev.Refused: self._refused,
            ev.ProposalRefused: self._proposal_refused,
            ev.ProposalReceived: self._ignore,
            ev.NewState: self._new_state,
            ev.UpdateFailed: self._update_failed,
            ev.UpdateNeedsUser: self._needs_user,
            ev.UpdateWithdrawn: self._withdrawn,
            ev.Fund: self._fund,
            ev.Opened: self._opened,
            ev.FundingFailed: self._funding_failed,
            ev.Register: self._on_chain,
            ev.ConcludeFinal: self._on_chain,
            ev.Conclude: self._on_chain,
            ev.Disputed: self._disputed,
            ev.Conflict: self._conflict,
            ev.Closed: self._closed,
            ev.Lost: self._given_up,
        }
        self.paid_out: dict[ChannelID, tuple[tuple[Address, int], ...]] = {}
        """What the chain paid our account, per asset, for the channels concluded while this
        client ran (from the conclusion's PaidOut events)."""
        self.stopped = False
        self.store_error: FailedPrecondition | None = None
        """Set once the store failed to make a write durable; every user request then fails
        with it (see `_store_broken`)."""
        peers.attach(self)
        if dispute_after is not None:
            self.watch_peers(dispute_after)

    # -- lifecycle ------------------------------------------------------------------------------

    def restore(self, lost: Mapping[ChannelID, str] | None = None) -> list[Channel]:
        """Load every channel from the store and resume it (after a restart); the channels.
        Those in `lost` (channel → what the chain lacks) are given up instead of resumed:
        nothing is sent for them, on- or off-chain."""
        restored = []
        for channel in self.store.channels():
            self._track(channel)
            if channel.phase not in TERMINAL:
                detail = (lost or {}).get(channel.channel_id)
                self._apply(channel.channel_id,
                            Restored() if detail is None else ChainLost(detail))
            restored.append(self.channels[channel.channel_id])
        for question in self._records.left_over():
            self._gone.add(question.question_id)
            about = None if question.channel_id is None else self.channels.get(
                question.channel_id)
            self._notify(GoneNotice(question.kind, question.question_id, question.peer,
                                    about, GONE_AT_RESTART))
        return restored

    def watch_peers(self, dispute_after: float) -> None:
        """Settle on-chain (ForceClose) the open channels with a peer that has been unreachable
        for `dispute_after` seconds: PROTOCOL.md §3, "stays unreachable past the user's
        patience". Checked a few times per period."""
        self.dispute_after = dispute_after
        if self._patience is not None and self._patience.active():
            self._patience.cancel()
        self._patience = self._reactor.callLater(self._patience_interval(), self._check_peers)

    def _patience_interval(self) -> float:
        return min(max((self.dispute_after or 0.0) / 4, 0.05), 60.0)

    def _check_peers(self) -> None:
        self._patience = None
        if self.stopped or self.dispute_after is None:
            return
        now = self._reactor.seconds()
        waiting: dict[Address, list[ChannelID]] = {}
        for channel in self.channels.values():
            if channel.phase is Phase.OPEN or channel.phase is Phase.UPDATING:
                waiting.setdefault(channel.peer, []).append(channel.channel_id)
        for peer in list(self._unreachable_since):
            if peer not in waiting:
                del self._unreachable_since[peer]
        for peer, channel_ids in waiting.items():
            if self.peers.is_connected(peer):
                self._unreachable_since.pop(peer, None)
                continue
            since = self._unreachable_since.setdefault(peer, now)
            if now - since < self.dispute_after:
                continue
            del self._unreachable_since[peer]
            log.warn("peer {peer} has been unreachable for {seconds} s: settling its "
                     "{count} channels on-chain", peer=_hex(peer), seconds=round(now - since),
                     count=len(channel_ids))
            for channel_id in channel_ids:
                self._apply(channel_id, ForceClose())
        self._patience = self._reactor.callLater(self._patience_interval(), self._check_peers)

    def stop(self) -> None:
        """Stop acting: pending timers are cancelled and later news (a deposit mined, an
        answer arriving) is ignored, so nothing is written after the session's store closes.
        Whatever was in flight is resumed from the store at the next `restore`. Questions
        waiting for our user are rejected to their peers (who would otherwise wait for their
        expiry); their records stay, so that the user learns of them at the next `restore`."""
        for proposal_id, pending in self._incoming.items():
            if pending.timer.active():
                pending.timer.cancel()
            self.peers.send(pending.peer, Reject(
                proposal_id, "the node stopped before its user answered")).addErrback(self._lost)
        for update_id, question in self._questions.items():
            if question.timer.active():
                question.timer.cancel()
            if question.channel_id in self.channels and self.store_error is None:
                self._apply(question.channel_id, UserTimedOut(update_id))
        self.stopped = True
        self.peers.detach(self)
        self._incoming.clear()
        self._incoming_from.clear()
        self._questions.clear()
        for channel_id in list(self._queues):
            self._fail_waiting(channel_id, FailedPrecondition("the session is closing"))
        for funding in list(self._funding.values()):
            funding.cancel()  # `Restored` funds again at the next open
        self._funding.clear()
        if self._patience is not None and self._patience.active():
            self._patience.cancel()
        self._patience = None

    # -- the user's requests --------------------------------------------------------------------

    def open_channel(self, request: OpenRequest) -> Deferred[Channel]:
        """Propose a channel to `request.peer`; fires with it once funded and open."""
        return Deferred.fromCoroutine(self._open_channel(request))

    async def _open_channel(self, request: OpenRequest) -> Channel:
        if self.store_error is not None:
            raise self.store_error
        proposal = make_proposal(
            request,
            participant=self.address,
            receiver=self.receiver,
            proposal_id=random_share(),
            nonce_share=random_share(),
            deployment=self.deployment,
        )
        message = Propose(
            proposal.proposal_id, proposal.chain_id, proposal.adjudicator,
            proposal.challenge_duration, proposal.nonce_share, proposal.assets,
            proposal.balances, proposal.participant, proposal.receiver,
        )
        # The peer's user may take up to its response timeout to decide.
        answer = await self.peers.request(
            request.peer, message, self.response_timeout + self.request_timeout
        )
        if isinstance(answer, Reject):
            raise PeerRejected(
                f"the peer rejected the proposal: {answer.reason}",
                peer=_hex(request.peer), reason=answer.reason,
            )
        if not isinstance(answer, Accept):  # pragma: no cover - the peer layer correlates
            raise PeerProtocolError("unexpected answer to a proposal", peer=_hex(request.peer))
        channel, events = complete_proposal(
            proposal, answer, sender=request.peer, peer=request.peer, signer=self.signer,
            deployment=self.deployment, confirm_updates=self.confirm_updates,
        )
        if channel is None:
            refused = next(e for e in events if isinstance(e, ev.ProposalRefused))
            self._execute(events)
            raise PeerProtocolError(
                f"the peer's acceptance is invalid: {refused.reason.value}",
                peer=_hex(request.peer), reason=refused.reason.value,
            )
        opened = self._wait(self._open_waiters, channel.channel_id)
        self._track(channel)
        self._execute(events)
        return await opened

    def proposed_deposits(self, proposal_id: bytes) -> dict[Address, int]:
        """What accepting the waiting proposal `proposal_id` would have us deposit, per asset
        (ResourceNotFound if no such proposal waits)."""
        pending = self._incoming.get(proposal_id)
        if pending is None:
            raise ResourceNotFound("no such proposal", type="proposal", id=_hex(proposal_id))
        proposal = pending.proposal
        return {asset: row[1] for asset, row in zip(proposal.assets, proposal.balances,
                                                    strict=True)}

    def respond_proposal(self, proposal_id: bytes, accept: bool) -> Deferred[Channel | None]:
        """Answer a `ProposalNotice`: accept (fires with the channel once funded and open) or
        reject (fires with None)."""
        return Deferred.fromCoroutine(self._respond_proposal(proposal_id, accept))

    async def _respond_proposal(self, proposal_id: bytes, accept: bool) -> Channel | None:
        if self.store_error is not None:
            raise self.store_error
        pending = self._take_incoming(proposal_id)
        if pending is None:
            self._raise_if_expired(proposal_id)
            if proposal_id in self._gone:
                raise self._gone_error("proposal", proposal_id)
            raise ResourceNotFound("no such proposal", type="proposal", id=_hex(proposal_id))
        pending.timer.cancel()
        if not accept:
            await self.peers.send(pending.peer, Reject(proposal_id, "rejected by the user"))
            return None
        channel, events = accept_proposal(
            pending.proposal, signer=self.signer, receiver=self.receiver,
            nonce_share=random_share(), deployment=self.deployment,
            confirm_updates=self.confirm_updates,
        )
        opened = self._wait(self._open_waiters, channel.channel_id)
        self._track(channel)
        self._execute(events)
        return await opened

    def send(self, channel_id: ChannelID, transfers: tuple[tuple[Address, int], ...],
             is_final: bool = False) -> Deferred[Channel]:
        """Pay (`amount > 0`) or request (`< 0`) per `(asset, amount)`, or finalise; fires with
        the channel once the peer countersigned and the state is durable.

        One update is in flight per channel; sends made meanwhile wait their turn, and waiting
        payments (positive amounts only) go out together in one update, so many callers on one
        channel share each round trip and each fsync.
        """
        if self.store_error is not None:
            return fail(self.store_error)
        channel = self.channels.get(channel_id)
        if channel is None:
            return fail(ResourceNotFound("no such channel", type="channel", id=_hex(channel_id)))
        queue = self._queues.get(channel_id)
        if queue is None:
            queue = self._queues[channel_id] = deque()
        elif len(queue) >= _MAX_WAITING:
            return fail(FailedPrecondition(
                f"{len(queue)} updates already wait on this channel", channel_id=_hex(channel_id)))
        item = _Waiting(transfers, is_final, Deferred())
        queue.append(item)
        self._drain(channel_id)
        return item.done

    def _drain(self, channel_id: ChannelID) -> None:
        """Propose what waits on the channel, if no update is in flight."""
        queue = self._queues.get(channel_id)
        if not queue or channel_id in self._paused:
            return
        channel = self.channels[channel_id]
        if channel.phase is Phase.UPDATING:
            return  # the end of that update drains again (`_apply`)
        if self.stopped:
            self._fail_waiting(channel_id, FailedPrecondition("the session is closing"))
            return
        if channel.phase is Phase.OPEN and not self.peers.is_connected(channel.peer):
            # Sign nothing for a link that does not exist yet: connect (which syncs) first, so
            # the update is not caught up in the reconnection's sync as "in flight before".
            self._paused.add(channel_id)
            self.peers.ping(channel.peer, self.request_timeout).addCallbacks(
                self._unpause, self._not_connected_for,
                callbackArgs=(channel_id,), errbackArgs=(channel_id,))
            return
        while queue:
            batch = [queue.popleft()]
            if _is_payment(batch[0]):
                while queue and len(batch) < _MAX_BATCH and _is_payment(queue[0]):
                    batch.append(queue.popleft())
            try:
                done = self._stage(self.channels[channel_id], _merged(batch), batch[0].is_final,
                                   max(w.attempt for w in batch))
            except InvalidArgument as exc:
                if len(batch) > 1:
                    # Together they are more than the balance: the first goes alone.
                    queue.extendleft(reversed(batch[1:]))
                    batch = batch[:1]
                    try:
                        done = self._stage(self.channels[channel_id], batch[0].transfers,
                                           batch[0].is_final, batch[0].attempt)
                    except PerundError as alone:
                        batch[0].done.errback(alone)
                        continue
                else:
                    batch[0].done.errback(exc)
                    continue
            except PerundError as exc:
                for waiting in batch:
                    waiting.done.errback(exc)
                continue
            done.addCallbacks(_fire_all, _fail_all, callbackArgs=(batch,), errbackArgs=(batch,))
            return

    def _unpause(self, _: object, channel_id: ChannelID) -> None:
        """The link is up, or a retry's pause is over: propose what waits."""
        self._paused.discard(channel_id)
        if channel_id in self.channels:
            self._drain(channel_id)

    def _not_connected_for(self, failure: Failure, channel_id: ChannelID) -> None:
        self._paused.discard(channel_id)
        error = failure.value if isinstance(failure.value, PerundError) else PeerUnreachable(
            f"the peer cannot be reached: {failure.getErrorMessage()}")
        self._fail_waiting(channel_id, error)

    def _fail_waiting(self, channel_id: ChannelID, error: PerundError) -> None:
        queue = self._queues.pop(channel_id, None)
        for waiting in queue or ():
            waiting.done.errback(error)

    def _stage(self, channel: Channel, transfers: tuple[tuple[Address, int], ...],
               is_final: bool, attempt: int) -> Deferred[Channel]:
        """Stage and send one update; PerundError at once if the core refuses it."""
        if self.stopped:
            raise FailedPrecondition("the session is closing")
        new, events = transition(channel, OwnUpdate(self.signer, transfers, is_final))
        channel_id = channel.channel_id
        staged = new.staged
        if staged is None:  # pragma: no cover - OwnUpdate always stages
            return fail(FailedPrecondition("the update was not staged"))
        done: Deferred[Channel] = Deferred()
        self._update_waiters[(channel_id, staged.state.version)] = done
        self.channels[channel_id] = new
        self._execute(events)
        return done.addErrback(self._retry, channel_id, transfers, is_final, attempt)

    def _retry(self, failure: Failure, channel_id: ChannelID,
               transfers: tuple[tuple[Address, int], ...], is_final: bool,
               attempt: int) -> Deferred[Channel]:
        """Propose a refused update again at a higher version when that cures the refusal:
        first in its channel's line, participant 1 after a pause (so that two retries after a
        collision do not collide again)."""
        retry = failure.value
        if not isinstance(retry, _Retry):
            return fail(failure)
        channel = self.channels.get(channel_id)
        if attempt >= _RETRIES or channel is None or self.stopped:
            return fail(retry.error)
        again = _Waiting(transfers, is_final, Deferred(), attempt + 1)
        queue = self._queues.get(channel_id)
        if queue is None:
            queue = self._queues[channel_id] = deque()
        queue.appendleft(again)
        delay = _RETRY_DELAY * (attempt + 1) * channel.index
        if delay:
            self._paused.add(channel_id)
            self._reactor.callLater(delay, self._unpause, None, channel_id)
        else:
            self._drain(channel_id)
        return again.done

    def respond_update(self, channel_id: ChannelID, update_id: bytes,
                       accept: bool) -> Deferred[Channel]:
        """Answer an `UpdateNotice`; fires with the channel afterwards."""
        if self.store_error is not None:
            return fail(self.store_error)
        question = self._questions.get(update_id)
        if question is None or question.channel_id != channel_id:
            if question is None and update_id in self._expired:
                return fail(self._late(update_id))
            if question is None and update_id in self._gone:
                return fail(self._gone_error("update", update_id))
            return fail(ResourceNotFound("no such update awaits an answer", type="update",
                                         id=_hex(update_id)))
        del self._questions[update_id]
        self._records.settled(update_id)
        question.timer.cancel()
        if self._reactor.seconds() >= question.expiry:
            return fail(UserResponseTimedOut("the answer came after the expiry",
                                             expiry=question.expiry,
                                             receivedAt=self._reactor.seconds()))
        try:
            self._apply(channel_id, RespondUpdate(self.signer, update_id, accept), user=True)
        except PerundError as exc:
            return fail(exc)
        return self._flushed(self.channels[channel_id])

    def close(self, channel_id: ChannelID) -> Deferred[Channel]:
        """Close cooperatively: a final update, then settlement; fires once closed on-chain."""
        return Deferred.fromCoroutine(self._close(channel_id))

    async def _close(self, channel_id: ChannelID) -> Channel:
        if self.store_error is not None:
            raise self.store_error
        channel = self.channels.get(channel_id)
        if channel is None:
            raise ResourceNotFound("no such channel", type="channel", id=_hex(channel_id))
        closed = self._wait(self._close_waiters, channel_id)
        if channel.phase in (Phase.OPEN, Phase.UPDATING) and not channel.latest.is_final:
            # The core turns a refused or unanswered final update into a dispute by itself.
            try:
                await self.send(channel_id, (), is_final=True)
            except (PeerRejected, PeerRequestTimedOut) as exc:
                log.warn("channel {channel_id}: the peer did not sign the final state ({why}); "
                         "closing through a dispute", channel_id=_hex(channel_id), why=exc)
            except FailedPrecondition as exc:
                # An earlier update of ours is unresolved (the peer went silent) or the peer's
                # update awaits an answer: no cooperative close is possible now.
                log.warn("channel {channel_id}: cannot close cooperatively ({why}); closing "
                         "through a dispute", channel_id=_hex(channel_id), why=exc)
            if self.channels[channel_id].phase in (Phase.OPEN, Phase.UPDATING):
                # The final update never left (the peer is unreachable): register ourselves.
                self._apply(channel_id, ForceClose(), user=True)
        elif channel.phase is Phase.FUNDING:
            self._apply(channel_id, ForceClose(), user=True)
        return await closed

    def force_close(self, channel_id: ChannelID) -> Deferred[Channel]:
        """Settle on-chain without the peer; fires once closed."""
        if self.store_error is not None:
            return fail(self.store_error)
        if channel_id not in self.channels:
            return fail(ResourceNotFound("no such channel", type="channel", id=_hex(channel_id)))
        closed = self._wait(self._close_waiters, channel_id)
        try:
            self._apply(channel_id, ForceClose(), user=True)
        except PerundError as exc:
            return fail(exc)
        return closed

    def chain_input(self, channel_id: ChannelID, change: Change) -> None:
        """Feed news from the chain (the watcher): Funded, Registered, Concluded, ..."""
        if channel_id in self.channels:
            self._apply(channel_id, change)

    # -- running the core -----------------------------------------------------------------------

    def _apply(self, channel_id: ChannelID, change: Change, user: bool = False) -> None:
        if self.stopped:
            if user:
                raise FailedPrecondition("the session is closing")
            return
        channel = self.channels[channel_id]
        try:
            new, events = transition(channel, change)
        except PerundError:
            if user:
                raise
            log.failure("channel {channel_id}: core refused {change}",
                        channel_id=_hex(channel_id), change=type(change).__name__)
            return
        except Exception:
            # A bug in the core must not take the node down with it; the channel is unchanged.
            log.failure("channel {channel_id}: core failed on {change}",
                        channel_id=_hex(channel_id), change=type(change).__name__)
            if user:
                raise
            return
        self.channels[channel_id] = new
        if channel.phase is Phase.FUNDING and new.phase is not Phase.FUNDING:
            funding = self._funding.pop(channel_id, None)
            if funding is not None:
                # Settling before it was funded (the peer registered, the user closed): stop
                # waiting for deposits that no longer matter.
                funding.cancel()
        self._execute(events)
        if channel_id in self._queues and new.phase is not Phase.UPDATING:
            self._drain(channel_id)

    def _execute(self, events: tuple[ev.Event, ...] | list[ev.Event], start: int = 0) -> None:
        handlers = self._handlers
        for i in range(start, len(events)):
            event = events[i]
            if type(event) is ev.Persist:
                try:
                    self.store.put(event.channel)
                except PerundError as exc:
                    self._store_broken(str(exc), events, i + 1)
                    return
                pending = self.store.flush()
                if pending is not None:
                    pending.addCallbacks(self._resume, self._store_failed,
                                         callbackArgs=(events, i + 1),
                                         errbackArgs=(events, i + 1))
                    return
                continue
            try:
                handlers[type(event)](event)
            except Exception:
                log.failure("executing {event} failed", event=type(event).__name__)

    def _resume(self, _: object, events: tuple[ev.Event, ...] | list[ev.Event],
                start: int) -> None:
        self._execute(events, start)

    def _store_failed(self, failure: Failure, events: tuple[ev.Event, ...] | list[ev.Event],
                      start: int) -> None:
        self._store_broken(failure.getErrorMessage(), events, start)

    def _store_broken(self, why: str, events: tuple[ev.Event, ...] | list[ev.Event],
                      start: int) -> None:
        """A write could not be made durable (a full or failing disk): nothing that depended
        on it may leave, so no message goes to a peer and no user hears of success, now or
        later. What the chain asks for still goes out, since registering or concluding a state
        both signed harms nobody: disputes keep being answered."""
        if self.store_error is None:
            self.store_error = FailedPrecondition(
                f"the session's store failed ({why}): nothing new can be "
                "signed. Fix the disk and restart the node; on-chain disputes are still "
                "answered meanwhile.")
            log.critical("the channel store failed to make a write durable: {error}; this "
                         "session signs nothing more until the node is restarted", error=why)
            self._fail_all_waiters(self.store_error)
        for event in events[start:]:
            if isinstance(event, _OnChain):
                self._on_chain(event)

    def _fail_all_waiters(self, error: PerundError) -> None:
        for channel_id in list(self._queues):
            self._fail_waiting(channel_id, error)
        waiting, self._update_waiters = self._update_waiters, {}
        for done in waiting.values():
            done.errback(error)
        for waiters in (self._open_waiters, self._close_waiters):
            for channel_id in list(waiters):
                self._resolve(waiters, channel_id, error)

    def _flushed(self, channel: Channel) -> Deferred[Channel]:
        pending = self.store.flush()
        if pending is None:
            d: Deferred[Channel] = Deferred()
            d.callback(channel)
            return d
        return pending.addCallbacks(lambda _: channel, self._store_error_instead)

    def _store_error_instead(self, failure: Failure) -> Failure:
        """What the user is told of a failed write: the session's store error, not its
        internals."""
        if self.store_error is not None:
            return Failure(self.store_error)  # type: ignore[no-untyped-call]
        return failure

    def _track(self, channel: Channel) -> None:
        self.channels[channel.channel_id] = channel
        self._by_peer.setdefault(channel.peer, set()).add(channel.channel_id)
        if channel.phase not in TERMINAL:
            self.peers.keep_connected(channel.peer, True)

    def _wait(self, waiters: dict[ChannelID, list[Deferred[Channel]]],
              channel_id: ChannelID) -> Deferred[Channel]:
        d: Deferred[Channel] = Deferred()
        waiters.setdefault(channel_id, []).append(d)
        return d

    def _resolve(self, waiters: dict[ChannelID, list[Deferred[Channel]]],
                 channel_id: ChannelID, result: Channel | PerundError) -> None:
        for d in waiters.pop(channel_id, []):
            if isinstance(result, PerundError):
                d.errback(result)
            else:
                d.callback(result)

    def _notify(self, notice: Notice) -> None:
        for observer in list(self.observers):
            try:
                observer(notice)
            except Exception:
                log.failure("an observer failed on {notice}", notice=type(notice).__name__)

    # -- the peer's messages --------------------------------------------------------------------

    def peer_disconnected(self, peer: Address) -> None:
        """Nothing to do: the patience check reads `is_connected`."""

    def peer_connected(self, peer: Address) -> None:
        self._on_connected(peer)

    def message_received(self, peer: Address, msg: Message) -> None:
        self._on_message(peer, msg)

    def _on_connected(self, peer: Address) -> None:
        for channel_id in list(self._by_peer.get(peer, ())):
            if self.channels[channel_id].phase not in TERMINAL:
                self._apply(channel_id, StartSync())

    def _on_message(self, peer: Address, msg: Message) -> None:
        kind = type(msg)
        if kind is Update:
            assert isinstance(msg, Update)
            if self._known_channel(peer, msg.state.channel_id, msg):
                self._apply(msg.state.channel_id,
                            UpdateReceived(peer, msg.state, msg.signature, self.signer))
            else:
                self.peers.send(peer, UpdateReject(msg.state.channel_id, msg.state.version,
                                                   "unknown channel")).addErrback(self._lost)
        elif kind is UpdateAccept:
            assert isinstance(msg, UpdateAccept)
            if self._known_channel(peer, msg.channel_id, msg):
                self._apply(msg.channel_id,
                            UpdateAcceptReceived(peer, msg.channel_id, msg.version, msg.signature))
        elif kind is UpdateReject:
            assert isinstance(msg, UpdateReject)
            if self._known_channel(peer, msg.channel_id, msg):
                self._apply(msg.channel_id,
                            UpdateRejectReceived(peer, msg.channel_id, msg.version, msg.reason))
        elif kind is Sync:
            assert isinstance(msg, Sync)
            if self._known_channel(peer, msg.state.channel_id, msg):
                self._apply(msg.state.channel_id, SyncReceived(peer, msg.state, msg.signatures))
        elif kind is Propose:
            assert isinstance(msg, Propose)
            self._proposal(peer, msg)
        else:
            # Late answers to proposals we gave up on, and anything else unsolicited.
            log.info("ignored an unsolicited {kind} from {peer}", kind=kind.__name__,
                     peer=_hex(peer))

    def _known_channel(self, peer: Address, channel_id: ChannelID, msg: Message) -> bool:
        channel = self.channels.get(channel_id)
        if channel is None:
            if self.peers.refused(peer):
                log.warn("refused {kind} from {peer} about unknown channel {channel_id}",
                         kind=type(msg).__name__, peer=_hex(peer), channel_id=_hex(channel_id))
            return False
        return True

    def _proposal(self, peer: Address, msg: Propose) -> None:
        if msg.proposal_id in self._incoming:
            if self.peers.refused(peer):
                log.warn("refused a repeated proposal {proposal_id} from {peer}",
                         proposal_id=_hex(msg.proposal_id), peer=_hex(peer))
            return
        events = receive_proposal(msg, sender=peer, me=self.address,
                                  peer_known=self.is_contact(peer), deployment=self.deployment)
        if any(isinstance(e, ev.ProposalReceived) for e in events):
            waiting = self._incoming_from.get(peer, 0)
            if waiting >= MAX_PROPOSALS_PER_PEER:
                if self.peers.refused(peer):
                    log.warn("refused proposal {proposal_id} from {peer}: {count} of its "
                             "proposals wait for an answer already",
                             proposal_id=_hex(msg.proposal_id), peer=_hex(peer), count=waiting)
                self.peers.send(peer, Reject(
                    msg.proposal_id, f"{waiting} of your proposals wait for an answer already"),
                ).addErrback(self._lost)
                return
            expiry = self._reactor.seconds() + self.response_timeout
            timer = self._reactor.callLater(self.response_timeout, self._proposal_expired,
                                            msg.proposal_id)
            self._incoming[msg.proposal_id] = _IncomingProposal(peer, msg, expiry, timer)
            self._incoming_from[peer] = waiting + 1
            self._records.asked("proposal", msg.proposal_id, peer, None, expiry)
            self._notify(ProposalNotice(peer, msg, expiry))
        else:
            self._execute(events)

    def _take_incoming(self, proposal_id: bytes) -> _IncomingProposal | None:
        pending = self._incoming.pop(proposal_id, None)
        if pending is not None:
            self._records.settled(proposal_id)
            left = self._incoming_from.pop(pending.peer, 1) - 1
            if left:
                self._incoming_from[pending.peer] = left
        return pending

    def _remember_expiry(self, key: bytes, expiry: float) -> None:
        if len(self._expired) >= MAX_REMEMBERED_EXPIRIES:
            del self._expired[next(iter(self._expired))]
        self._expired[key] = expiry

    def _late(self, key: bytes) -> UserResponseTimedOut:
        return UserResponseTimedOut("the answer came after the expiry", expiry=self._expired[key],
                                    receivedAt=self._reactor.seconds())

    def _raise_if_expired(self, key: bytes) -> None:
        if key in self._expired:
            raise self._late(key)

    def _gone_error(self, kind: str, key: bytes) -> FailedPrecondition:
        return FailedPrecondition(f"this {kind} is gone: the node restarted before it was "
                                  "answered (the peer was told it was rejected, or its own "
                                  "wait ran out)", type=kind, id=_hex(key))

    def _proposal_expired(self, proposal_id: bytes) -> None:
        pending = self._take_incoming(proposal_id)
        if pending is not None:
            self._remember_expiry(proposal_id, pending.expiry)
            log.info("proposal {proposal_id} from {peer} expired unanswered",
                     proposal_id=_hex(proposal_id), peer=_hex(pending.peer))
            self.peers.send(pending.peer, Reject(proposal_id, "the user did not answer in time")
                            ).addErrback(self._lost)

    # -- executing the core's events ------------------------------------------------------------

    def _ignore(self, event: ev.Event) -> None:
        pass

    def _lost(self, failure: Failure) -> None:
        # A send to a peer that is gone: the sync on reconnection repairs what it missed.
        log.info("a message to a peer was not delivered: {why}", why=failure.getErrorMessage())

    def _send_accept(self, e: ev.SendAccept) -> None:
        msg = Accept(e.proposal_id, e.nonce_share, e.participant, e.receiver, e.signature)
        self.peers.send(e.peer, msg).addErrback(self._lost)

    def _send_reject(self, e: ev.SendReject) -> None:
        self.peers.send(e.peer, Reject(e.proposal_id, e.reason)).addErrback(self._lost)

    def _send_update(self, e: ev.SendUpdate) -> None:
        channel_id, version = e.state.channel_id, e.state.version
        answer = self.peers.request(e.peer, Update(e.state, e.signature),
                                    self.response_timeout + self.request_timeout)
        answer.addCallbacks(self._update_answered, self._update_unanswered,
                            callbackArgs=(channel_id, version),
                            errbackArgs=(channel_id, version))

    def _update_answered(self, answer: Message, channel_id: ChannelID, version: int) -> None:
        if isinstance(answer, (UpdateAccept, UpdateReject)):
            self._on_message_from_peer_of(answer.channel_id, answer)
        channel = self.channels.get(channel_id)
        if channel is None:
            return
        staged = channel.staged
        if staged is not None and staged.proposer == channel.index \
                and staged.state.version == version:
            # The answer was refused (a bad countersignature): no other answer will come on
            # this request, and the peer may hold the state fully signed. That is exactly an
            # unanswered update, settled by a sync on a fresh connection: a peer that breaks
            # the protocol loses its connection, and the reconnection syncs.
            self._unanswered[(channel_id, version)] = PeerRequestTimedOut(
                "the peer answered the update with an invalid countersignature",
                peer=_hex(channel.peer), timeout=0)
            self._apply(channel_id, UpdateTimedOut(version))
            self._unanswered.pop((channel_id, version), None)
            log.warn("dropping the connection to {peer}: it answered update {version} of "
                     "channel {channel_id} with an invalid countersignature",
                     peer=_hex(channel.peer), version=version, channel_id=_hex(channel_id))
            self.peers.disconnect(channel.peer).addErrback(self._lost)

    def _on_message_from_peer_of(self, channel_id: ChannelID, msg: Message) -> None:
        channel = self.channels.get(channel_id)
        if channel is not None:
            self._on_message(channel.peer, msg)

    def _update_unanswered(self, failure: Failure, channel_id: ChannelID, version: int) -> None:
        log.info("update {version} of channel {channel_id} got no answer: {why}",
                 version=version, channel_id=_hex(channel_id), why=failure.getErrorMessage())
        if isinstance(failure.value, PerundError):
            # Tell the user why (timed out, connection lost, unreachable), not just "no answer".
            self._unanswered[(channel_id, version)] = failure.value
        if channel_id in self.channels:
            self._apply(channel_id, UpdateTimedOut(version))
        self._unanswered.pop((channel_id, version), None)

    def _send_update_accept(self, e: ev.SendUpdateAccept) -> None:
        msg = UpdateAccept(e.channel_id, e.version, e.signature)
        self.peers.send(e.peer, msg).addErrback(self._lost)

    def _send_update_reject(self, e: ev.SendUpdateReject) -> None:
        msg = UpdateReject(e.channel_id, e.version, e.reason)
        self.peers.send(e.peer, msg).addErrback(self._lost)

    def _send_sync(self, e: ev.SendSync) -> None:
        self.peers.send(e.peer, Sync(e.state, e.signatures)).addErrback(self._lost)

    def _refused(self, e: ev.Refused) -> None:
        if self.peers.refused(e.sender):
            log.warn("refused a message from {peer} about channel {channel_id}: {reason} "
                     "{detail}", peer=_hex(e.sender), channel_id=_hex(e.channel_id),
                     reason=e.reason.value, detail=e.detail)

    def _proposal_refused(self, e: ev.ProposalRefused) -> None:
        if self.peers.refused(e.peer):
            log.warn("refused proposal {proposal_id} from {peer}: {reason} {detail}",
                     proposal_id=_hex(e.proposal_id), peer=_hex(e.peer), reason=e.reason.value,
                     detail=e.detail)

    def _new_state(self, e: ev.NewState) -> None:
        channel = self.channels[e.channel_id]
        if e.source is ev.Source.OWN:
            waiter = self._update_waiters.pop((e.channel_id, e.state.version), None)
            if waiter is not None:
                waiter.callback(channel)
        if self.observers:
            self._notify(ChannelNotice(channel, e))

    def _update_failed(self, e: ev.UpdateFailed) -> None:
        channel = self.channels[e.channel_id]
        if self.observers:
            self._notify(ChannelNotice(channel, e))
        waiter = self._update_waiters.pop((e.channel_id, e.version), None)
        if waiter is None:
            return
        peer = _hex(channel.peer)
        error: PerundError
        if e.failure is ev.UpdateFailure.REJECTED or e.failure is ev.UpdateFailure.COLLISION:
            error = PeerRejected(f"the peer rejected the update: {e.reason}", peer=peer,
                                 reason=e.reason)
            if e.failure is ev.UpdateFailure.COLLISION or e.reason == ev.Reason.VERSION.value:
                # A higher version cures it (records.Channel.signed_up_to): `_retry`.
                waiter.errback(_Retry(error))
                return
        elif e.failure is ev.UpdateFailure.TIMED_OUT:
            error = self._unanswered.get((e.channel_id, e.version)) or PeerRequestTimedOut(
                "the peer did not answer the update in time", peer=peer,
                timeout=self.response_timeout + self.request_timeout)
        else:
            error = FailedPrecondition(f"the update did not complete: {e.failure.value}"
                                       + (f" ({e.reason})" if e.reason else ""),
                                       channel_id=_hex(e.channel_id))
        waiter.errback(error)

    def _needs_user(self, e: ev.UpdateNeedsUser) -> None:
        expiry = self._reactor.seconds() + self.response_timeout
        timer = self._reactor.callLater(self.response_timeout, self._question_expired,
                                        e.channel_id, e.update_id)
        self._questions[e.update_id] = _PendingQuestion(e.channel_id, expiry, timer)
        self._records.asked("update", e.update_id, self.channels[e.channel_id].peer,
                            e.channel_id, expiry)
        self._notify(UpdateNotice(self.channels[e.channel_id], e.update_id, e.kind, expiry, e))

    def _question_expired(self, channel_id: ChannelID, update_id: bytes) -> None:
        question = self._questions.pop(update_id, None)
        if question is not None:
            self._records.settled(update_id)
            self._remember_expiry(update_id, question.expiry)
            if channel_id in self.channels:
                self._apply(channel_id, UserTimedOut(update_id))

    def _withdrawn(self, e: ev.UpdateWithdrawn) -> None:
        question = self._questions.pop(e.update_id, None)
        if question is not None:
            self._records.settled(e.update_id)
            if question.timer.active():
                question.timer.cancel()
        self._notify(ChannelNotice(self.channels[e.channel_id], e))

    def _fund(self, e: ev.Fund) -> None:
        def funded(_: object) -> None:
            self._funding.pop(e.channel_id, None)
            self._apply(e.channel_id, Funded())

        def not_funded(failure: Failure) -> None:
            self._funding.pop(e.channel_id, None)
            if self.stopped or isinstance(failure.value, CancelledError):
                return
            log.warn("channel {channel_id} was not funded: {why}",
                     channel_id=_hex(e.channel_id), why=failure.getErrorMessage())
            if not isinstance(failure.value, PeerNotFunded):
                # Our own deposit failed (no funds for it, the chain refused it): say so rather
                # than blame the peer.
                self._funding_errors[e.channel_id] = FailedPrecondition(
                    f"our deposit failed: {failure.getErrorMessage()}",
                    channel_id=_hex(e.channel_id))
            self._apply(e.channel_id, FundingExpired())

        funding = self.funder.fund(e)
        self._funding[e.channel_id] = funding
        funding.addCallbacks(funded, not_funded)

    def _opened(self, e: ev.Opened) -> None:
        channel = self.channels[e.channel_id]
        self._resolve(self._open_waiters, e.channel_id, channel)
        self._notify(ChannelNotice(channel, e))

    def _funding_failed(self, e: ev.FundingFailed) -> None:
        channel = self.channels[e.channel_id]
        error = self._funding_errors.pop(e.channel_id, None) or PeerNotFunded(
            "the peer did not fund the channel in time", peer=_hex(channel.peer))
        self._resolve(self._open_waiters, e.channel_id, error)
        self._notify(ChannelNotice(channel, e))

    def _settled(self, channel_id: ChannelID) -> Callable[[Concluded | None], None]:
        def settled(concluded: Concluded | None) -> None:
            if concluded is not None and channel_id in self.channels:
                self._apply(channel_id, concluded)

        return settled

    def _settle_failed(self, what: str, e: _OnChain, attempt: int) -> Callable[[Failure], None]:
        def failed(failure: Failure) -> None:
            if self.stopped:
                return
            if isinstance(failure.value, TxReverted):
                # The contract refused it (a higher version is registered, the challenge period
                # is over, ...); what the chain did instead reaches the core through the watcher.
                log.warn("{what} for channel {channel_id} reverted: {error}", what=what,
                         channel_id=_hex(e.channel_id), error=failure.getErrorMessage())
                return
            if isinstance(failure.value, TxTimedOut | ChainNotReachable | InsufficientFunds):
                delay = min(self.settle_retry_delay * (attempt + 1), _SETTLE_RETRY_CAP)
                # Out of funds needs the operator: an error, not a warning.
                level = log.error if isinstance(failure.value, InsufficientFunds) else log.warn
                level("{what} for channel {channel_id} failed ({error}); retrying in {delay} s",
                      what=what, channel_id=_hex(e.channel_id), delay=delay,
                      error=failure.getErrorMessage())
                self._reactor.callLater(delay, self._on_chain, e, attempt + 1)
                return
            log.failure("{what} for channel {channel_id} failed", failure, what=what,
                        channel_id=_hex(e.channel_id))

        return failed

    def _on_chain(self, e: _OnChain, attempt: int = 0) -> None:
        """Send the transaction `e` asks for; news of its outcome comes back as core input."""
        if self.stopped or e.channel_id not in self.channels:
            return
        if self.channels[e.channel_id].phase in TERMINAL:
            return
        if isinstance(e, ev.Register):
            what, sent = "register", self.settler.register(e)
        elif isinstance(e, ev.ConcludeFinal):
            what, sent = "concludeFinal", self.settler.conclude_final(e)
        else:
            what, sent = "conclude", self.settler.conclude(e)
        sent.addCallbacks(self._settled(e.channel_id), self._settle_failed(what, e, attempt))

    def _disputed(self, e: ev.Disputed) -> None:
        channel = self.channels[e.channel_id]
        # Registered before it was funded: the peer gave up on funding (its deposits come back).
        if e.channel_id in self._open_waiters:
            ours = self._funding_errors.pop(e.channel_id, None)
            self._resolve(self._open_waiters, e.channel_id, ours or PeerNotFunded(
                "the channel was registered on-chain before it was funded",
                peer=_hex(channel.peer)))
        log.warn("channel {channel_id}: version {version} is registered on-chain; the challenge "
                 "period ends at {timeout}", channel_id=_hex(e.channel_id), version=e.version,
                 timeout=e.timeout)
        self._notify(ChannelNotice(channel, e))

    def _conflict(self, e: ev.Conflict) -> None:
        log.critical("channel {channel_id}: the peer holds a different fully signed state of "
                     "version {version}; disputing on-chain", channel_id=_hex(e.channel_id),
                     version=e.ours.version)
        self._notify(ChannelNotice(self.channels[e.channel_id], e))

    def _given_up(self, e: ev.Lost) -> None:
        channel = self.channels[e.channel_id]
        log.error("channel {channel_id} with {peer} is lost: {detail}",
                  channel_id=_hex(e.channel_id), peer=_hex(channel.peer), detail=e.detail)
        error = FailedPrecondition(f"the chain lost this channel: {e.detail}",
                                   channel_id=_hex(e.channel_id))
        self._resolve(self._close_waiters, e.channel_id, error)
        self._resolve(self._open_waiters, e.channel_id, error)
        self._notify(ChannelNotice(channel, e))

    def _closed(self, e: ev.Closed) -> None:
        channel = self.channels[e.channel_id]
        if e.paid is not None:
            self.paid_out[e.channel_id] = e.paid
        self._resolve(self._close_waiters, e.channel_id, channel)
        self._resolve(self._open_waiters, e.channel_id,
                      PeerNotFunded("the channel closed before it opened",
                                    peer=_hex(channel.peer)))
        peer_channels = self._by_peer.get(channel.peer, set())
        if all(self.channels[c].phase in TERMINAL for c in peer_channels):
            self.peers.keep_connected(channel.peer, False)
        self._notify(ChannelNotice(channel, e))
