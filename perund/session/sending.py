"""The send queue: our own updates, one in flight per channel, the others waiting their turn.

Rules, stated once:

- one update of ours is in flight per channel; sends made meanwhile wait in that channel's line
  (at most `MAX_WAITING`), in order;
- waiting plain payments (positive amounts only, which the peer accepts without asking its
  user) go out together in one update, at most `MAX_BATCH` of them; a request or a final update
  always goes alone. Merged payments that together exceed the balance are split: the first
  goes alone;
- nothing is signed for a peer that is not connected: the queue pings first (connecting, which
  syncs) and proposes once the link is up, or fails what waits with the reason;
- nothing is signed while an update of ours is unresolved or a restart's resync is pending
  (`Channel.needs_sync`): what waits goes out once that is resolved, or after
  `request_timeout`, when the core refuses it with the reason;
- an update refused in a way a higher version cures (both sides proposed at once, or the peer
  already signed that version), and a final update a newer state took the place of (a Sync
  brought it to either side), is proposed again, first in its line, at most `RETRIES` times
  (a final update `FINAL_RETRIES`). After a collision the two sides take turns: participant 0
  retries at once and, once its retry ends (countersigned or not), proposes nothing until it
  has taken the peer's next update; participant 1 retries once it has taken participant 0's.
  Either wait ends after `RETRY_DELAY` per attempt at the latest (the peer may have nothing to
  send). So two sides that pay without pause both get through, and so does a close.

Each send fires with the channel once its update is countersigned and durable, or fails with
the PerundError the user is told (`_error_of`). An update that merges several sends, or whose
send names a reference, carries a memo of its parts (`perund.channel.memo`) for both sides'
histories; a request the peer declines is recorded there as rejected (or expired).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from perund.channel import events as ev
from perund.channel.changes import OwnUpdate
from perund.channel.encoding import Signer
from perund.channel.machine import transition
from perund.channel.memo import Memo, PaymentPart
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.syncing import CONNECTION_LOST, OVERTAKEN
from perund.channel.types import Address, ChannelID, State, VirtualProof
from perund.errors import (
    FailedPrecondition,
    InvalidArgument,
    PeerDisconnected,
    PeerRejected,
    PeerRequestTimedOut,
    PeerUnreachable,
    PerundError,
    ResourceNotFound,
)
from perund.session.memos import Memos
from perund.session.ports import PeerLinks
from perund.session.timing import Timing
from perund.storage.payments import Status

RETRIES: Final = 3
"""How often an update refused for a reason that a higher version cures (both sides proposed at
once, or the peer already signed a state of that version) is proposed again."""

FINAL_RETRIES: Final = 12
"""As `RETRIES`, for a final update: a close that gives up becomes a dispute (its gas and its
wait), so it outlasts a peer that keeps paying while it closes, whose payments may collide with
it more often than `RETRIES` times (each side's pause after a collision grows with its own count
of attempts, and the two counts differ after a refusal that is not a collision)."""

RETRY_DELAY: Final = 0.01
"""After a collision, the longest a side waits (per attempt) for the peer's turn: participant 1
before its retry, participant 0 after its retry landed (module docstring)."""

MAX_BATCH: Final = 256
"""At most this many waiting payments go out in one update."""

MAX_WAITING: Final = 10_000
"""Sends waiting on one channel beyond this fail at once instead of piling up."""

REMEMBERED_REFUSALS: Final = 8
"""Per channel, the last updates of ours the peer refused for good, kept to notice a peer that
completes one of them after all (it holds our signature on each)."""

log = Logger(namespace="perund.client")

Transfers = tuple[tuple[Address, int], ...]
Commit = Callable[[Channel, tuple[ev.Event, ...]], None]
"""Makes a transition's result current and executes its events (the client's)."""


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


@dataclass(slots=True)
class _Waiting:
    """A send waiting for its channel's update in flight to finish."""

    transfers: Transfers
    is_final: bool
    done: Deferred[Channel]
    attempt: int = 0
    """How often it was proposed before and refused in a way a higher version cures."""
    parts: Memo = ()
    """What it pays or requests, as memo parts (empty when a part cannot say it: an update
    that both pays and requests, or a final one)."""
    reference: str | None = None
    proof: VirtualProof | None = None
    """A virtual channel's lock or fold (perund.session.virtual): it always goes alone."""
    signed: tuple[State, ...] = ()
    """The states of its earlier attempts (refused in a way a higher version cures). We signed
    each, so the peer may still make one of them the channel's state (a Sync after its refusal:
    only a dishonest peer does that); then this send is paid and goes out no more."""

    def is_payment(self) -> bool:
        """A plain payment, which the peer accepts without asking its user: safe to merge."""
        return not self.is_final and self.proof is None and bool(self.transfers) and all(
            amount > 0 for _, amount in self.transfers)


def _merged(batch: list[_Waiting]) -> Transfers:
    if len(batch) == 1:
        return batch[0].transfers
    totals: dict[Address, int] = {}
    for waiting in batch:
        for asset, amount in waiting.transfers:
            totals[asset] = totals.get(asset, 0) + amount
    return tuple(totals.items())


def _part(transfers: Transfers, assets: tuple[Address, ...],
          reference: str | None) -> Memo:
    """`transfers` as one memo part over `assets`, if one part can say it."""
    amounts = dict.fromkeys(assets, 0)
    for asset, amount in transfers:
        if asset not in amounts:
            return ()
        amounts[asset] += amount
    values = tuple(amounts.values())
    if all(v >= 0 for v in values) and any(values):
        return (PaymentPart(values, False, reference),)
    if all(v <= 0 for v in values) and any(values):
        return (PaymentPart(tuple(-v for v in values), True, reference),)
    return ()


def _memo(batch: list[_Waiting]) -> Memo:
    """The memo of an update made of `batch`: its parts, when it merges several sends or one
    names a reference (else nothing: the state says it all)."""
    if len(batch) == 1 and len(batch[0].parts) <= 1 and batch[0].reference is None:
        return ()
    if any(not waiting.parts for waiting in batch):
        return ()
    return tuple(part for waiting in batch for part in waiting.parts)


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


class SendQueue:
    """Our updates per channel: waiting, merged, staged one at a time, retried (module doc).

    `channels` is the client's view of every channel; `commit` makes a staged update current
    and sends it (the client's `_commit`); the client reports each update's outcome back with
    `landed` and `failed`, and calls `drain` whenever a channel is at rest again.
    """

    def __init__(self, reactor: Any, *, signer: Signer, links: PeerLinks, timing: Timing,
                 channels: Mapping[ChannelID, Channel], commit: Commit, memos: Memos) -> None:
        self._reactor = reactor
        self._signer = signer
        self._links = links
        self._timing = timing
        self._channels = channels
        self._commit = commit
        self._memos = memos
        self._lines: dict[ChannelID, deque[_Waiting]] = {}
        self._paused: set[ChannelID] = set()
        """Channels whose line waits for a link (a ping) or for the peer's turn."""
        self._peer_turns: dict[ChannelID, Any] = {}
        """Channels whose line waits for the peer's turn after a collision, with the
        DelayedCall that ends the wait if no update of the peer's comes first."""
        self._in_flight: dict[tuple[ChannelID, int],
                              tuple[Deferred[Channel], State, tuple[State, ...]]] = {}
        """Our staged updates (their states, and the states of their earlier attempts), by
        channel and version, until `landed` or `failed`."""
        self._sync_waits: dict[ChannelID, Any] = {}
        """Channels whose line waits for their pending sync (`_awaiting_sync`), with the
        DelayedCall that ends the wait."""
        self._refused: dict[ChannelID, deque[tuple[State, str]]] = {}
        """Per channel, our updates the peer refused for good, and why (`synced`)."""
        self.stopped = False

    def send(self, channel_id: ChannelID, transfers: Transfers, is_final: bool,
             reference: str | None = None,
             proof: VirtualProof | None = None) -> Deferred[Channel]:
        """Queue an update (see `ChannelClient.send`; with a `proof`, a virtual channel's lock
        or fold); fires once countersigned and durable."""
        channel = self._channels.get(channel_id)
        if channel is None:
            return fail(ResourceNotFound("no such channel", type="channel", id=_hex(channel_id)))
        line = self._lines.get(channel_id)
        if line is None:
            line = self._lines[channel_id] = deque()
        elif len(line) >= MAX_WAITING:
            return fail(FailedPrecondition(
                f"{len(line)} updates already wait on this channel", channel_id=_hex(channel_id)))
        assets = channel.latest.assets
        parts = () if is_final else _part(transfers, assets, reference)
        item = _Waiting(transfers, is_final, Deferred(), 0, parts, reference, proof)
        line.append(item)
        self.drain(channel_id)
        return item.done

    def drain(self, channel_id: ChannelID) -> None:
        """Propose what waits on the channel, if no update is in flight."""
        line = self._lines.get(channel_id)
        if not line or channel_id in self._paused:
            return
        channel = self._channels[channel_id]
        if channel.phase is Phase.UPDATING:
            return  # the end of that update drains again
        if self.stopped:
            self._fail_line(channel_id, FailedPrecondition("the session is closing"))
            return
        if self._awaiting_sync(channel_id, channel):
            return
        if channel.phase is Phase.OPEN and not self._links.is_connected(channel.peer):
            # Sign nothing for a link that does not exist yet: connect (which syncs) first, so
            # the update is not caught up in the reconnection's sync as "in flight before".
            self._paused.add(channel_id)
            self._links.ping(channel.peer, self._timing.request_timeout).addCallbacks(
                self._unpause, self._not_connected,
                callbackArgs=(channel_id,), errbackArgs=(channel_id,))
            return
        while line:
            batch = [line.popleft()]
            if batch[0].is_payment() and not batch[0].signed:
                while line and len(batch) < MAX_BATCH and line[0].is_payment():
                    batch.append(line.popleft())
            try:
                done = self._stage(channel_id, _merged(batch), batch[0].is_final,
                                   max(w.attempt for w in batch), _memo(batch), batch[0].proof,
                                   batch[0].signed)
            except InvalidArgument as exc:
                if len(batch) > 1:
                    # Together they are more than the balance: the first goes alone.
                    line.extendleft(reversed(batch[1:]))
                    batch = batch[:1]
                    try:
                        done = self._stage(channel_id, batch[0].transfers, batch[0].is_final,
                                           batch[0].attempt, _memo(batch))
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

    def _awaiting_sync(self, channel_id: ChannelID, channel: Channel) -> bool:
        """Whether the line waits for the channel's pending sync: an update of ours whose fate
        is unknown, or a restart's resync (`Channel.needs_sync`), when nothing can be signed.
        It waits until that is resolved (the peer's answer or Sync; the client drains again
        after every change) or `request_timeout` has passed; then what waits goes on, and
        the core refuses it with the reason."""
        wait = self._sync_waits.get(channel_id)
        if not (channel.needs_sync and channel.phase is Phase.OPEN):
            if wait is not None:
                del self._sync_waits[channel_id]
                if wait.active():
                    wait.cancel()
            return False
        if wait is None:
            self._sync_waits[channel_id] = self._reactor.callLater(
                self._timing.request_timeout, self._sync_wait_over, channel_id)
            return True
        return bool(wait.active())

    def _sync_wait_over(self, channel_id: ChannelID) -> None:
        if channel_id in self._channels:
            self.drain(channel_id)  # the wait's DelayedCall is spent: the line goes on
        self._sync_waits.pop(channel_id, None)

    def peer_update_taken(self, channel_id: ChannelID) -> None:
        """The peer's update became the channel's state: its turn after a collision is over."""
        if channel_id in self._peer_turns:
            self._peer_turn_over(channel_id)

    def synced(self, channel_id: ChannelID) -> None:
        """The peer's Sync made a state current: a send one of whose earlier attempts it is
        was paid after all (`_Waiting.signed`), and waits no more; an update of ours the peer
        had refused for good is named in a warning (its user was told it failed)."""
        current = self._channels[channel_id].current
        if current is None:
            return
        for state, reason in self._refused.get(channel_id, ()):
            if state == current.state:
                # The user was told it failed. Only a dishonest peer does this; the history
                # has the payment, and this line says why it came late.
                log.warn("channel 0x{channel}: the peer completed our update {version} after "
                         "refusing it ({reason}): what it pays is paid after all",
                         channel=channel_id.hex(), version=state.version, reason=reason)
        line = self._lines.get(channel_id)
        if not line:
            return
        paid = [w for w in line if current.state in w.signed]
        for waiting in paid:
            line.remove(waiting)
            waiting.done.callback(self._channels[channel_id])

    def landed(self, channel_id: ChannelID, version: int) -> None:
        """Our update of `version` is countersigned and durable (a `NewState` of ours)."""
        flight = self._in_flight.pop((channel_id, version), None)
        if flight is not None:
            flight[0].callback(self._channels[channel_id])

    def failed(self, e: ev.UpdateFailed) -> None:
        """Our update `e.version` did not complete: tell its senders why, or retry it."""
        flight = self._in_flight.pop((e.channel_id, e.version), None)
        if flight is None:
            return
        done, proposed, signed = flight
        channel = self._channels[e.channel_id]
        if signed and channel.current is not None and channel.current.state in signed:
            # Dropped for a state the peer synced: an earlier attempt of this very send, which
            # the peer refused and then completed after all. It is paid.
            done.callback(channel)
            return
        if e.failure is ev.UpdateFailure.REJECTED and e.reason != ev.Reason.VERSION.value:
            # Declined for good (a timeout is no answer: a sync may yet show it signed).
            status: Status = "expired" if e.reason == ev.Reason.USER_TIMEOUT.value \
                else "rejected"
            self._memos.unpaid(self._channels[e.channel_id], proposed, True, status)
        error = self._error_of(e)
        newer = e.failure is ev.UpdateFailure.SUPERSEDED or e.reason == ev.Reason.NEWER_STATE.value
        if proposed.is_final and newer and isinstance(error, PerundError):
            # A newer state took the place of our final update (syncing._adopt, ours or the
            # peer's, which then refused it): the close is proposed again on top of it.
            error = _Retry(error)
        if isinstance(error, PeerRejected):
            self._remember_refused(e.channel_id, (proposed,), e.reason)
        done.errback(error)

    def _remember_refused(self, channel_id: ChannelID, states: tuple[State, ...],
                          reason: str) -> None:
        refused = self._refused.get(channel_id)
        if refused is None:
            refused = self._refused[channel_id] = deque(maxlen=REMEMBERED_REFUSALS)
        refused.extend((state, reason) for state in states)

    def forget(self, channel_id: ChannelID) -> None:
        """Drop what the queue keeps of a channel the client forgets (a retired one)."""
        self._lines.pop(channel_id, None)
        self._refused.pop(channel_id, None)
        wait = self._sync_waits.pop(channel_id, None)
        if wait is not None and wait.active():
            wait.cancel()

    def fail_everything(self, error: PerundError) -> None:
        """Fail every send, waiting or in flight, with `error` (the store broke)."""
        for channel_id in list(self._lines):
            self._fail_line(channel_id, error)
        in_flight, self._in_flight = self._in_flight, {}
        for done, _, _ in in_flight.values():
            done.errback(error)

    def stop(self) -> None:
        """Fail what waits; propose nothing more (updates in flight end as they will)."""
        self.stopped = True
        turns, self._peer_turns = self._peer_turns, {}
        waits, self._sync_waits = self._sync_waits, {}
        for call in (*turns.values(), *waits.values()):
            if call.active():
                call.cancel()
        for channel_id in list(self._lines):
            self._fail_line(channel_id, FailedPrecondition("the session is closing"))

    def _error_of(self, e: ev.UpdateFailed) -> PerundError | _Retry:
        peer = _hex(self._channels[e.channel_id].peer)
        failure = e.failure
        if failure is ev.UpdateFailure.REJECTED or failure is ev.UpdateFailure.COLLISION:
            error = PeerRejected(f"the peer rejected the update: {e.reason}", peer=peer,
                                 reason=e.reason)
            if failure is ev.UpdateFailure.COLLISION or e.reason == ev.Reason.VERSION.value:
                # A higher version cures it (records.Channel.signed_up_to): `_retry`.
                return _Retry(error)
            return error
        if failure is ev.UpdateFailure.TIMED_OUT:
            if e.cause is not None:
                return e.cause
            if e.reason == CONNECTION_LOST:
                # A new connection came while it waited on the old one: the peer may or may
                # not have it, as when a connection drops (a close proposes it again).
                return PeerDisconnected(
                    "the connection dropped before the peer answered the update", peer=peer,
                    timeout=None)
            if e.reason == OVERTAKEN:
                return PeerRequestTimedOut(
                    f"the update's outcome is unknown: {OVERTAKEN}, which may still countersign "
                    "it", peer=peer, timeout=None)
            return PeerRequestTimedOut(
                "the peer did not answer the update in time", peer=peer,
                timeout=self._timing.response_timeout + self._timing.request_timeout)
        return FailedPrecondition(f"the update did not complete: {failure.value}"
                                  + (f" ({e.reason})" if e.reason else ""),
                                  channel_id=_hex(e.channel_id))

    def _stage(self, channel_id: ChannelID, transfers: Transfers, is_final: bool,
               attempt: int, memo: Memo = (), proof: VirtualProof | None = None,
               signed: tuple[State, ...] = ()) -> Deferred[Channel]:
        """Stage and send one update; PerundError at once if the core refuses it."""
        if self.stopped:
            raise FailedPrecondition("the session is closing")
        new, events = transition(self._channels[channel_id],
                                 OwnUpdate(self._signer, transfers, is_final, proof))
        staged = new.staged
        if staged is None:  # pragma: no cover - OwnUpdate always stages
            return fail(FailedPrecondition("the update was not staged"))
        done: Deferred[Channel] = Deferred()
        self._in_flight[(channel_id, staged.state.version)] = (done, staged.state, signed)
        self._memos.note(channel_id, staged.state.version, memo, ours=True)
        self._commit(new, events)
        return done.addErrback(self._retry, channel_id, transfers, is_final, attempt, memo,
                               proof, signed, staged.state)

    def _retry(self, failure: Failure, channel_id: ChannelID, transfers: Transfers,
               is_final: bool, attempt: int, memo: Memo,
               proof: VirtualProof | None = None, signed: tuple[State, ...] = (),
               refused: State | None = None) -> Deferred[Channel]:
        """Propose a refused update again at a higher version when that cures the refusal:
        first in its channel's line, participant 1 after a pause (so that two retries after a
        collision do not collide again). `signed` are the states of the earlier attempts,
        `refused` the state of this one (`_Waiting.signed`)."""
        retry = failure.value
        if not isinstance(retry, _Retry):
            return fail(failure)
        if refused is not None:
            signed = (*signed, refused)
        channel = self._channels.get(channel_id)
        if attempt >= (FINAL_RETRIES if is_final else RETRIES) or channel is None \
                or self.stopped:
            self._remember_refused(channel_id, signed,
                                   retry.error.data.get("reason", retry.error.message))
            return fail(retry.error)
        again = _Waiting(transfers, is_final, Deferred(), attempt + 1, memo,
                         memo[0].reference if len(memo) == 1 else None, proof, signed)
        line = self._lines.get(channel_id)
        if line is None:
            line = self._lines[channel_id] = deque()
        line.appendleft(again)
        wait = RETRY_DELAY * (attempt + 1)
        if channel.index == 1:
            self._await_peer_turn(channel_id, wait)
            return again.done
        again.done.addBoth(self._yield_turn, channel_id, wait)
        self.drain(channel_id)
        return again.done

    def _yield_turn(self, result: Any, channel_id: ChannelID, wait: float) -> Any:
        """Participant 0's retry ended, countersigned or not: the peer proposes next (module
        docstring). Also after a refusal (a request the peer's user declined): proposing the
        next waiting payment at once would collide with the peer's retry again, every time
        while we keep paying, until the peer's retries ran out (a close then disputed)."""
        if not self.stopped and channel_id in self._channels:
            self._await_peer_turn(channel_id, wait)
        return result

    def _await_peer_turn(self, channel_id: ChannelID, wait: float) -> None:
        previous = self._peer_turns.pop(channel_id, None)
        if previous is not None and previous.active():
            previous.cancel()
        self._paused.add(channel_id)
        self._peer_turns[channel_id] = self._reactor.callLater(
            wait, self._peer_turn_over, channel_id)

    def _peer_turn_over(self, channel_id: ChannelID) -> None:
        call = self._peer_turns.pop(channel_id, None)
        if call is not None and call.active():
            call.cancel()
        self._unpause(None, channel_id)

    def _unpause(self, _: object, channel_id: ChannelID) -> None:
        """The link is up, or a retry's pause is over: propose what waits."""
        self._paused.discard(channel_id)
        if channel_id in self._channels:
            self.drain(channel_id)

    def _not_connected(self, failure: Failure, channel_id: ChannelID) -> None:
        self._paused.discard(channel_id)
        error = failure.value if isinstance(failure.value, PerundError) else PeerUnreachable(
            f"the peer cannot be reached: {failure.getErrorMessage()}")
        self._fail_line(channel_id, error)

    def _fail_line(self, channel_id: ChannelID, error: PerundError) -> None:
        line = self._lines.pop(channel_id, None)
        for waiting in line or ():
            waiting.done.errback(error)
