"""Sync: after a reconnection or a restart, each side sends its latest fully signed state and
adopts a newer one. Part of the channel core: `perund.channel.machine`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from perund.channel.changes import (
    Relinked,
    StartSync,
    SyncReceived,
)
from perund.channel.encoding import signing_digest
from perund.channel.events import (
    Conflict,
    Event,
    NewState,
    Persist,
    Reason,
    Refused,
    SendChannelClosed,
    SendSync,
    Source,
    UpdateFailure,
)
from perund.channel.phases import TERMINAL, Phase, advance
from perund.channel.records import Channel, SignedState
from perund.channel.rules import (
    balance_rules,
    fully_signed,
    signed_by,
)
from perund.channel.steps import (
    NOTHING,
    Result,
    current_of,
    drop_staged,
    fund_event,
    make_current,
    refuse,
    register_latest,
    send_sync,
    settles_unfunded,
)
from perund.channel.types import Params, State
from perund.channel.updating import fail_own

# --- sync ---------------------------------------------------------------------------------------

CLOSED_HERE: Final = "the channel is closed"
"""The reason of our `ChannelClosed` answering a Sync about a channel we hold closed."""



def _start_sync(channel: Channel, change: StartSync) -> Result:
    """A new connection: what was in flight on the old one is over, then send our state.

    Our update in flight becomes `abandoned` (its request died with the connection); the
    peer's update awaiting our user is dropped and rejected, since the peer gave it up too,
    and must not be countersigned after the peer learned (from our Sync) that we lack it.
    """
    if channel.current is None or channel.phase in TERMINAL:
        return channel, NOTHING
    events: list[Event] = []
    staged = channel.staged
    persist = False
    if staged is not None:
        if staged.proposer == channel.index:
            channel, failed = fail_own(channel, UpdateFailure.TIMED_OUT, CONNECTION_LOST)
            # Persisted and synced just below, with the final value of the flags.
            events = [e for e in failed if not isinstance(e, Persist | SendSync)]
            persist = True
        else:
            channel, events = drop_staged(channel, UpdateFailure.SUPERSEDED, CONNECTION_LOST)
    fresh = channel.abandoned is not None
    if not channel.sync_sent or channel.fresh_link is not fresh:
        channel = channel.evolve(sync_sent=True, fresh_link=fresh)
    if persist:
        events.insert(0, Persist(channel))
    events.append(send_sync(channel))
    return channel, tuple(events)


def _relinked(channel: Channel, change: Relinked) -> Result:
    """The lower side's dial replaced the connection in use (`Relinked`): answer the peer's
    next Sync, which may be the first message of a peer that restarted behind the old
    connection and waits for ours (`resyncing`) however recently we sent one.

    An update of ours abandoned before now is resolved by that Sync, as on a new connection:
    the peer never wrote to the replaced one (it chose its own dial, or lost ours). Our update
    in flight and the peer's awaiting our user stay: their messages moved to the new connection.
    """
    if channel.current is None or channel.phase in TERMINAL:
        return channel, NOTHING
    fresh = channel.fresh_link or channel.abandoned is not None
    if not channel.sync_sent and channel.fresh_link is fresh:
        return channel, NOTHING
    return channel.evolve(sync_sent=False, fresh_link=fresh), NOTHING


def _sync_received(channel: Channel, change: SyncReceived) -> Result:
    """Reconcile with the peer's latest fully signed state (docs/specification.md §3 Sync).

    Equal versions must be identical (else: conflict, dispute). A higher version is adopted only
    when both signatures verify and it keeps channel, assets and totals. A half-signed update in
    flight is dropped once the peer's state is known, or completed if the peer holds it fully
    signed. We answer with our own state unless we sent one since the peer last sent us anything
    but a Sync (which is what keeps two nodes from answering each other forever). An unchecked
    countersignature on our state is checked first (`_check_current`).
    """
    sender, theirs = change.sender, change.state
    if sender != channel.peer:
        return refuse(channel, sender, Reason.NOT_PEER)
    if channel.phase is Phase.CLOSED and type(channel.params) is Params \
            and theirs.channel_id == channel.channel_id:
        # The peer takes the channel for live: it missed our close (one without the chain,
        # at our funding deadline, while its node was down), or the conclusion. It settles
        # on-chain what it holds (docs/protocol.md, "A channel closed without the chain"); of
        # a channel concluded on-chain, its registration's preflight reverts, costing nothing.
        return channel, (SendChannelClosed(channel.peer, channel.channel_id, CLOSED_HERE),)
    if channel.phase in TERMINAL:
        return channel, NOTHING
    if theirs.channel_id != channel.channel_id:
        return refuse(channel, sender, Reason.WRONG_CHANNEL)
    if channel.checked is None or channel.current is None:
        return _reconcile(channel, change)
    checked, checking = _check_current(channel, change)
    new, events = _reconcile(checked, change)
    # Every write of a transition carries its final value (what the rest of it did as well).
    return new, tuple(
        Persist(new, e.wait, e.write, e.by_us) if isinstance(e, Persist) else e for e in checking
    ) + events


def _check_current(channel: Channel, change: SyncReceived) -> Result:
    """Check the peer's countersignature on our `current`, left unchecked for a payment of ours
    (docs/protocol.md, "Verification by interest"), before reconciling: the Sync says which
    state the peer holds, and a state of ours at or below our current that the peer claims
    should be one it countersigned. A higher one is for `_reconcile` to adopt or refuse.

    Valid: it is checked now. Not valid: the peer countersigned falsely, and we go back to the
    state its Sync shows it holds, when that is `checked` or a validly signed one of ours after
    it: it pays us at least what our current did. The peer's update awaiting our user, made on
    top of the false state, is withdrawn.
    """
    current, checked, theirs = current_of(channel), channel.checked, change.state
    if checked is None or theirs.version > current.state.version:
        return channel, NOTHING
    if signed_by(signing_digest(current.state), current.signatures[channel.peer_index],
                 channel.peer):
        new = channel.evolve(checked=None)
        return new, (Persist(new, False),)
    fallback = None
    if theirs.version == checked.state.version:
        fallback = checked if theirs == checked.state else None
    elif theirs.version > checked.state.version and balance_rules(checked.state, theirs) is None \
            and fully_signed(signing_digest(theirs), change.signatures, channel.params):
        fallback = SignedState(theirs, change.signatures)
    if fallback is None:
        # The Sync shows no state of ours that the peer holds (it is older than `checked`,
        # or not validly signed): falling back to `checked` could drop payments of ours it
        # does hold, and build on a state it would take for a different one. Ours stays,
        # unchecked; a dispute registers `checked` (`steps.provable`).
        return channel, NOTHING
    version = current.state.version
    refused = Refused(channel.channel_id, channel.peer, Reason.SIGNATURE,
                      f"version {version}, countersigned falsely (found at a sync)")
    if fallback.state == current.state:
        # The peer does hold it: only its countersignature to us was wrong.
        new = channel.evolve(current=fallback, checked=None)
        return new, (refused, Persist(new, False))
    staged = channel.staged
    dropped: list[Event] = []
    if staged is not None and staged.proposer != channel.index:
        channel, dropped = drop_staged(channel, UpdateFailure.SUPERSEDED,
                                       "the peer countersigned falsely")
    # Our Sync since carried the false state, which the peer refuses: it hears this one.
    new = channel.evolve(current=fallback, checked=None, sync_sent=False)
    return new, (refused, Persist(new), *dropped,
                 NewState(channel.channel_id, fallback.state, Source.SYNC))


def _reconcile(channel: Channel, change: SyncReceived) -> Result:
    """`_sync_received` once the Sync is known to be the peer's, for this channel."""
    sender, theirs = change.sender, change.state
    current = channel.current
    if current is None:
        return _sync_version_zero(channel, change)
    ours = current.state
    detail = f"version {theirs.version}"
    if theirs.version < ours.version:
        reason = balance_rules(ours, theirs, locks_may_change=True)
        if reason is not None:
            return refuse(channel, sender, reason, detail)
        return _synced(channel, change.awaiting)
    if theirs.version == ours.version:
        if theirs == ours:
            return _synced(channel, change.awaiting)
        if not fully_signed(signing_digest(theirs), change.signatures, channel.params):
            return refuse(channel, sender, Reason.SIGNATURE, detail)
        return _conflict(channel, theirs)
    if ours.is_final:
        return refuse(channel, sender, Reason.FINAL, detail)
    # Both signatures are checked below: ours on a lock or fold means we made or matched it.
    reason = balance_rules(ours, theirs, locks_may_change=True)
    if reason is not None:
        return refuse(channel, sender, reason, detail)
    staged = channel.staged
    own = staged is not None and staged.proposer == channel.index and staged.state == theirs
    digest = staged.digest if own and staged is not None else signing_digest(theirs)
    if not fully_signed(digest, change.signatures, channel.params):
        return refuse(channel, sender, Reason.SIGNATURE, detail)
    return _adopt(channel, SignedState(theirs, change.signatures), own)


def _synced(channel: Channel, awaiting: int) -> Result:
    """Finish a sync that brought no newer state.

    The peer's update awaiting our user is dropped (the peer gave it up when it synced), and
    counts against the peer as a refusal: asking our user and withdrawing costs the peer
    nothing, and an honest one withdraws only an update that waited out its own timeout. Not
    when the Sync says that update still awaits us (`awaiting`): the peer only answered a Sync
    of ours, or its dial replaced a connection, and its update is still in flight. Our own
    abandoned update is resolved only on a fresh connection: on the old one, this Sync may
    have been sent before our update reached the peer.
    """
    staged = channel.staged
    events: list[Event] = []
    if staged is not None and staged.proposer != channel.index \
            and staged.state.version != awaiting:
        channel, events = drop_staged(channel, UpdateFailure.SUPERSEDED, "the peer synced")
        events.append(Refused(channel.channel_id, channel.peer, Reason.WITHDRAWN,
                              f"version {staged.state.version}"))
    reply = not channel.sync_sent
    resolved = channel.fresh_link and channel.abandoned is not None
    if reply or resolved or channel.resyncing:
        # A restarted node is resynced by any Sync: it comes on a connection made since.
        channel = channel.evolve(
            sync_sent=True,
            abandoned=None if resolved else channel.abandoned,
            fresh_link=False if resolved else channel.fresh_link,
            resyncing=False,
        )
    if resolved:
        events.insert(0, Persist(channel))
    if reply:
        events.append(send_sync(channel))
    return channel, tuple(events)


def _adopt(channel: Channel, signed: SignedState, own: bool) -> Result:
    """Make the peer's higher fully signed state current.

    An update of ours in flight that is above that state stays open: the peer holds our
    signature on it and may still countersign it (it may have synced before our update reached
    it), so it becomes `abandoned`, its fate unknown, as after a timeout; the user hears that
    the peer may or may not have it. One at or below it can never count and is dropped, and so
    is a final one (the close is proposed again on the newer state: an unanswered final update
    would mean a dispute). An update abandoned before is resolved as `_synced` resolves it, or
    by a state at or above it.
    """
    dropped: list[Event] = []
    version = signed.state.version
    reply = not channel.sync_sent
    abandoned = channel.abandoned
    if abandoned is not None and (abandoned.state.version <= version or channel.fresh_link):
        # Resolved: the peer's state is at or above it, or the peer sent its state on a
        # connection made since, knowing everything it got on the old one.
        abandoned = None
    staged = channel.staged
    if staged is not None and not own:
        if staged.proposer == channel.index and staged.state.version > version \
                and not staged.state.is_final:
            channel, failed = fail_own(channel, UpdateFailure.TIMED_OUT, OVERTAKEN)
            dropped = [e for e in failed if not isinstance(e, Persist | SendSync)]
            abandoned = channel.abandoned
        else:
            channel, dropped = drop_staged(channel, UpdateFailure.SUPERSEDED,
                                           Reason.NEWER_STATE.value)
    source = Source.OWN if own else Source.SYNC
    # The state carries our signature too: count its version as signed.
    new, events = make_current(
        channel,
        signed,
        source,
        own,
        abandoned=abandoned,
        fresh_link=False,
        sync_sent=True,
        signed_up_to=max(channel.signed_up_to, signed.state.version),
        resyncing=False,
    )
    events[1:1] = dropped
    if reply:
        events.append(send_sync(new))
    return new, tuple(events)


def _conflict(channel: Channel, theirs: State) -> Result:
    """Two different fully signed states of one version: only the chain can settle it."""
    ours = current_of(channel).state
    channel, events = drop_staged(channel, UpdateFailure.SETTLING, "conflicting states")
    events.insert(0, Conflict(channel.channel_id, ours, theirs))
    if channel.phase in (Phase.FUNDING, Phase.OPEN):
        channel = channel.evolve(
            phase=advance(channel.phase, Phase.CLOSING), abandoned=None, fresh_link=False,
            resyncing=False, unfunded=settles_unfunded(channel),
        )
        events.insert(1, Persist(channel))
        events.append(register_latest(channel))
    return channel, tuple(events)


def _sync_version_zero(channel: Channel, change: SyncReceived) -> Result:
    """While proposing, the peer's Sync can only bring the proposer's signature on version 0."""
    staged = channel.staged
    if staged is None or change.state != staged.state:
        return refuse(channel, change.sender, Reason.STALE, f"version {change.state.version}")
    if not fully_signed(staged.digest, change.signatures, channel.params):
        return refuse(channel, change.sender, Reason.SIGNATURE, "version 0")
    reply = not channel.sync_sent
    new = channel.evolve(
        phase=advance(channel.phase, Phase.FUNDING),
        current=SignedState(staged.state, change.signatures),
        staged=None,
        sync_sent=True,
    )
    events: list[Event] = [Persist(new), fund_event(new, staged.state)]
    if reply:
        events.append(send_sync(new))
    return new, tuple(events)


OVERTAKEN: Final = "the peer synced an older state while this update was on its way"
"""Why an update of ours became `abandoned` in `_adopt`."""

CONNECTION_LOST: Final = "connection lost"
"""Why an update in flight ended on a new connection (`_start_sync`)."""


HANDLERS: Final[dict[type, Callable[[Channel, Any], Result]]] = {
    SyncReceived: _sync_received,
    StartSync: _start_sync,
    Relinked: _relinked,
}
"""The inputs this module handles, for `perund.channel.machine.transition`."""
