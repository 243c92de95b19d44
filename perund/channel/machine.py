"""The channel state machine: `transition(channel, change) -> (channel, events)`.

Pure: no I/O, no clock, no randomness; signing uses the `Signer` carried by the input. Three
kinds of input, three ways to say no:

- a **user** request that cannot be done raises a `perund.errors` exception (`InvalidArgument`,
  `FailedPrecondition`, `ResourceNotFound`); nothing changed, so the caller simply reports it;
- a **peer** message that breaks a rule yields the unchanged channel and a `Refused` event (plus a
  `SendUpdateReject` where the protocol answers one); it never raises;
- a **stale** timer or chain input (an update that is already settled, a phase already left)
  yields the unchanged channel and no events.

See docs/core.md for the state diagram and the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from perund.channel.changes import (
    ChainLost,
    ChallengeExpired,
    Change,
    Concluded,
    ForceClose,
    Funded,
    FundingExpired,
    LockFailed,
    MatchFailed,
    OwnUpdate,
    Registered,
    Reorganised,
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
from perund.channel.encoding import Signer, signing_digest
from perund.channel.events import (
    Closed,
    Conclude,
    ConcludeFinal,
    Conflict,
    Disputed,
    Event,
    Fund,
    FundingFailed,
    Lost,
    NewState,
    Opened,
    Persist,
    Reason,
    Refused,
    Register,
    SendSync,
    SendUpdate,
    SendUpdateAccept,
    SendUpdateReject,
    Source,
    UpdateFailed,
    UpdateFailure,
    UpdateKind,
    UpdateNeedsUser,
    UpdateWithdrawn,
)
from perund.channel.phases import RECEIVES_UPDATES, TERMINAL, Phase, advance, at_rest, busy
from perund.channel.records import Channel, Dispute, SignedState, Staged, reservation_for
from perund.channel.rules import (
    balance_rules,
    fully_signed,
    lowers_balance,
    raises_balance,
    signed_by,
    successor_rules,
)
from perund.channel.types import UINT64_MAX, Address, Params, Signature, State
from perund.channel.virtual import await_match, fold_parent, is_virtual, lock_parent, proof_state
from perund.channel.virtual import received_rules as virtual_received_rules
from perund.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    PerundError,
    ResourceNotFound,
)

Result = tuple[Channel, tuple[Event, ...]]
"""What every transition returns: the new channel value and the events to execute in order."""

_NOTHING: Final[tuple[Event, ...]] = ()


def transition(channel: Channel, change: Change) -> Result:
    """Apply one input to one channel. See the module docstring for how refusals look."""
    return _HANDLERS[type(change)](channel, change)


# --- helpers ------------------------------------------------------------------------------------


def _ordered(channel: Channel, ours: Signature, theirs: Signature) -> tuple[Signature, Signature]:
    return (ours, theirs) if channel.index == 0 else (theirs, ours)


def _refuse(channel: Channel, sender: Address, reason: Reason, detail: str = "") -> Result:
    return channel, (Refused(channel.channel_id, sender, reason, detail),)


def _refuse_update(channel: Channel, sender: Address, state: State, reason: Reason) -> Result:
    """Refuse the peer's Update and tell it so (docs/specification.md §3, update step 2)."""
    return channel, (
        Refused(channel.channel_id, sender, reason, f"version {state.version}"),
        SendUpdateReject(channel.peer, state.channel_id, state.version, reason.value),
    )


def _check_signer(channel: Channel, signer: Signer) -> None:
    if signer.address != channel.me:
        # The shell handed us the wrong key: a bug, not a user's or a peer's mistake.
        raise Internal(
            "signer is not this channel's participant", channel_id=channel.channel_id.hex()
        )


def _current(channel: Channel) -> SignedState:
    if channel.current is None:  # pragma: no cover - guarded by the phase checks
        raise AssertionError("channel has no fully signed state in phase " + channel.phase.value)
    return channel.current


def _drop_staged(channel: Channel, failure: UpdateFailure,
                 reason: str) -> tuple[Channel, list[Event]]:
    """Forget the update in flight and say so; phase UPDATING → OPEN.

    Ours: `UpdateFailed`. The peer's: `UpdateWithdrawn` for our user and an explicit
    `UpdateReject` for the peer, whose core keeps its update unresolved until it hears back.
    """
    staged = channel.staged
    if staged is None or channel.current is None:
        # While proposing, staged version 0 is all we have: it stays as the channel's record.
        return channel, []
    dropped = channel.evolve(staged=None, phase=advance(channel.phase, at_rest(channel.phase)))
    version = staged.state.version
    if staged.proposer == channel.index:
        return dropped, [UpdateFailed(channel.channel_id, version, failure, reason)]
    return dropped, [
        UpdateWithdrawn(channel.channel_id, staged.update_id, reason),
        SendUpdateReject(channel.peer, channel.channel_id, version, reason),
    ]


def _make_current(
    channel: Channel, signed: SignedState, source: Source, primary: bool, wait: bool = True,
    **changes: Any
) -> tuple[Channel, list[Event]]:
    """Make a newer fully signed state current; the phase and on-chain duties follow from it.
    `wait`: the user hears of it only once the write is durable. `changes` are further fields
    to set in the same copy (this is the hot path)."""
    state = signed.state
    phase = channel.phase
    if phase in RECEIVES_UPDATES:
        phase = Phase.CLOSING if state.is_final else at_rest(phase)
    new = channel.evolve(
        phase=advance(channel.phase, phase), current=signed, staged=None, **changes
    )
    events: list[Event] = [Persist(new, wait), NewState(channel.channel_id, state, source)]
    if phase is Phase.CLOSING or phase is Phase.DISPUTED:
        events.extend(_settlement(new, primary))
    return new, events


def _register(channel: Channel) -> Register:
    current = _current(channel)
    return Register(channel.channel_id, channel.params, current.state, current.signatures)


def _fund(channel: Channel, state: State) -> Event:
    params = channel.params
    if type(params) is not Params:
        return lock_parent(channel)  # a virtual channel is funded by locks in its parents
    return Fund(channel.channel_id, params, channel.index, state.assets, state.balances)


def _settlement(channel: Channel, primary: bool) -> list[Event]:
    """What a settling channel must do on-chain about its (new) current state."""
    current = _current(channel)
    params = channel.params
    if current.state.is_final:
        if type(params) is Params:
            return [ConcludeFinal(channel.channel_id, params, current.state, current.signatures,
                                  primary)]
        if channel.phase is Phase.CLOSING:
            return [fold_parent(channel)]  # a virtual channel settles in its parents
        # A disputed virtual channel: its final state is one more refutation (no shortcut).
    if channel.phase is Phase.CLOSING or (
        channel.phase is Phase.DISPUTED
        # No dispute known while disputed: a reorganisation took it (see `_reorganised`).
        and (channel.dispute is None or current.state.version > channel.dispute.version)
    ):
        return [_register(channel)]
    return []


# --- our own updates -----------------------------------------------------------------------------


def _own_update(channel: Channel, change: OwnUpdate) -> Result:
    """Stage the next state with our signature; persist it, then send it."""
    if channel.phase is not Phase.OPEN:
        if channel.phase is Phase.UPDATING:
            raise FailedPrecondition(
                "another update is in flight on this channel", channel_id=channel.channel_id.hex()
            )
        raise FailedPrecondition(
            f"channel is {channel.phase.value}, not open",
            channel_id=channel.channel_id.hex(),
            phase=channel.phase.value,
        )
    if channel.needs_sync:
        raise FailedPrecondition(
            "the node restarted: waiting for the peer's sync" if channel.abandoned is None
            else "an earlier update timed out: waiting for the peer's sync",
            channel_id=channel.channel_id.hex(),
        )
    current = _current(channel).state
    _check_signer(channel, change.signer)
    if change.proof is not None or (change.is_final and current.locked):
        return _own_virtual_update(channel, current, change)
    me = channel.index
    rows = list(current.balances)
    for asset, amount in change.transfers:
        try:
            a = current.assets.index(asset)
        except ValueError:
            raise InvalidArgument(
                "asset is not part of this channel",
                name="currency",
                value="0x" + bytes(asset).hex(),
                requirement="one of the channel's assets",
            ) from None
        if type(amount) is not int:
            raise InvalidArgument(
                "amounts are integers (wei)", name="amount", value=repr(amount), requirement="int"
            )
        row = rows[a]
        mine, theirs = row[me] - amount, row[1 - me] + amount
        if mine < 0 or theirs < 0:
            available = row[me] if mine < 0 else row[1 - me]
            raise InvalidArgument(
                "insufficient balance" if mine < 0 else "the peer's balance is insufficient",
                name="amount",
                value=str(abs(amount)),
                requirement=f"at most {available}",
                # For the API to say it in the currency's unit (it knows the decimals).
                asset="0x" + bytes(asset).hex(),
                available=str(available),
            )
        rows[a] = (mine, theirs) if me == 0 else (theirs, mine)
    try:
        # Never current + 1 blindly: the peer may hold our signature on a refused update of
        # that version (records.Channel.signed_up_to).
        version = max(current.version, channel.signed_up_to) + 1
        state = State(current.channel_id, version, current.assets, tuple(rows), change.is_final,
                      current.locked)
    except ValueError as exc:  # only a uint64 version overflow gets here
        raise FailedPrecondition(str(exc), channel_id=channel.channel_id.hex()) from None
    return _stage_own(channel, state, change)


def _stage_own(channel: Channel, state: State, change: OwnUpdate) -> Result:
    digest = signing_digest(state)
    signature = change.signer.sign_digest(digest)
    staged = Staged(channel.index, state, signature, digest)
    version = state.version
    if version <= channel.reserved and change.proof is None:
        # Our signature is covered by a durable reservation: the Update need not wait for the
        # write (docs/protocol.md, "Durability by interest"). A lock or fold of a virtual
        # channel still waits, as before (rare, and the intermediary's pairing relies on it).
        new = channel.evolve(phase=Phase.UPDATING, staged=staged, signed_up_to=version)
        return new, (Persist(new, False),
                     SendUpdate(channel.peer, state, signature, change.proof))
    new = channel.evolve(phase=Phase.UPDATING, staged=staged, signed_up_to=version,
                         reserved=max(channel.reserved, reservation_for(version)))
    return new, (Persist(new), SendUpdate(channel.peer, state, signature, change.proof))


def _own_virtual_update(channel: Channel, current: State, change: OwnUpdate) -> Result:
    """Our lock or fold of a virtual channel (`change.proof`) in this ledger channel; and the
    refusal to close a ledger channel that funds virtual channels (a final state locks
    nothing: the contract's concludeFinal takes none)."""
    if change.proof is None:
        raise FailedPrecondition(
            "the channel funds virtual channels: close them first",
            channel_id=channel.channel_id.hex(),
            virtual_channels=["0x" + lock.channel_id.hex() for lock in current.locked])
    if change.transfers or change.is_final:
        raise Internal("a lock or fold moves nothing else")  # a shell bug
    version = max(current.version, channel.signed_up_to) + 1
    if version > UINT64_MAX:
        raise FailedPrecondition("version must be a uint64", channel_id=channel.channel_id.hex())
    return _stage_own(channel, proof_state(channel, current, version, change.proof), change)


def _accept_received(channel: Channel, change: UpdateAcceptReceived) -> Result:
    """The peer countersigned our staged state (or, while proposing, signed version 0), or,
    late, the update of ours that had timed out."""
    if change.sender != channel.peer:
        return _refuse(channel, change.sender, Reason.NOT_PEER)
    if change.channel_id != channel.channel_id:
        return _refuse(channel, change.sender, Reason.WRONG_CHANNEL)
    staged = channel.staged
    if staged is None or staged.proposer != channel.index or staged.state.version != change.version:
        abandoned = channel.abandoned
        if abandoned is None or abandoned.state.version != change.version:
            detail = f"version {change.version}"
            return _refuse(channel, change.sender, Reason.NOTHING_STAGED, detail)
        staged, source = abandoned, Source.SYNC
    else:
        source = Source.OWN
    if not signed_by(staged.digest, change.signature, channel.peer):
        return _refuse(channel, change.sender, Reason.SIGNATURE, f"version {change.version}")
    state = staged.state
    signed = SignedState(state, _ordered(channel, staged.signature, change.signature))
    if state.version == 0:
        new = channel.evolve(
            phase=advance(channel.phase, Phase.FUNDING),
            current=signed,
            staged=None,
            sync_sent=False,
        )
        return new, (Persist(new), _fund(new, state))
    # A payment of ours is held by the payee, who countersigned it: our user may hear of it
    # before our own write is durable. A state that benefits us, or a final one, may not; nor
    # a lock or fold of a virtual channel (kept as strict as before: rare, and relied on).
    current = _current(channel).state
    wait = state.is_final or state.locked != current.locked \
        or raises_balance(current, state, channel.index)
    new, events = _make_current(
        channel, signed, source, True, wait, abandoned=None, fresh_link=False, sync_sent=False
    )
    return new, tuple(events)


def _reject_received(channel: Channel, change: UpdateRejectReceived) -> Result:
    """The peer refused our staged update (drop it; a refused close becomes a dispute), or
    the update of ours that had timed out (it is resolved: the peer never signs it)."""
    if change.sender != channel.peer:
        return _refuse(channel, change.sender, Reason.NOT_PEER)
    if change.channel_id != channel.channel_id:
        return _refuse(channel, change.sender, Reason.WRONG_CHANNEL)
    staged = channel.staged
    if staged is not None and staged.proposer == channel.index:
        if staged.state.version == change.version:
            failure = (
                UpdateFailure.COLLISION if change.reason == Reason.COLLISION.value
                else UpdateFailure.REJECTED
            )
            reason, above = _signed_up_to_of(change.reason)
            signed_up_to = channel.signed_up_to if above is None \
                else max(channel.signed_up_to, above)
            return _fail_own(channel.evolve(sync_sent=False, signed_up_to=signed_up_to),
                             failure, reason)
    elif channel.abandoned is not None and channel.abandoned.state.version == change.version:
        new = channel.evolve(abandoned=None, fresh_link=False, sync_sent=False)
        return new, (Persist(new),)
    return _refuse(channel, change.sender, Reason.NOTHING_STAGED, f"version {change.version}")


_SIGNED_UP_TO: Final = " (signed up to "


def _version_reject(channel: Channel, sender: Address, state: State) -> Result:
    """Refuse an update at or below a version we signed, naming the highest one so that the
    peer proposes above it (after our restart it may be up to a reservation block ahead)."""
    reason = f"{Reason.VERSION.value}{_SIGNED_UP_TO}{channel.signed_up_to})"
    return channel, (
        Refused(channel.channel_id, sender, Reason.VERSION, f"version {state.version}"),
        SendUpdateReject(channel.peer, state.channel_id, state.version, reason),
    )


def _signed_up_to_of(reason: str) -> tuple[str, int | None]:
    """A peer's reject reason without the version it names (`_version_reject`), and that
    version; the reason unchanged and None for any other reject."""
    prefix = Reason.VERSION.value + _SIGNED_UP_TO
    if not (reason.startswith(prefix) and reason.endswith(")")):
        return reason, None
    digits = reason[len(prefix):-1]
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 20):
        return reason, None
    version = int(digits)
    return Reason.VERSION.value, version if version <= UINT64_MAX else None


def _timed_out(channel: Channel, change: UpdateTimedOut) -> Result:
    """No answer to our update: drop it, keep it as `abandoned` until its fate is known."""
    staged = channel.staged
    if staged is None or staged.proposer != channel.index or staged.state.version != change.version:
        return channel, _NOTHING
    return _fail_own(channel, UpdateFailure.TIMED_OUT, "no answer from the peer", change.cause)


def _fail_own(channel: Channel, failure: UpdateFailure, reason: str,
              cause: PerundError | None = None) -> Result:
    """Drop our staged update after a reject or a timeout, with what has to follow."""
    staged = channel.staged
    assert staged is not None
    failed = UpdateFailed(channel.channel_id, staged.state.version, failure, reason, cause)
    if staged.state.version == 0:
        # The proposer never signed version 0: nothing can be on-chain for us, so the channel
        # is abandoned (the staged state stays for the record).
        new = channel.evolve(phase=advance(channel.phase, Phase.CLOSED))
        return new, (Persist(new), failed, Closed(channel.channel_id, 0))
    timed_out = failure is UpdateFailure.TIMED_OUT
    final = staged.state.is_final
    new = channel.evolve(
        staged=None,
        # docs/specification.md §3 Close: a refused or unanswered final update → dispute.
        phase=advance(channel.phase, Phase.CLOSING if final else at_rest(channel.phase)),
        abandoned=staged if timed_out else None,
        sync_sent=channel.sync_sent or timed_out,
        fresh_link=False,
    )
    if not (timed_out or final):
        return new, (failed,)
    events: list[Event] = [Persist(new), failed]
    if timed_out:
        # docs/specification.md §3: after a timeout, sync; the peer answers with its state.
        events.append(_send_sync(new))
    if final:
        events.append(_register(new))
    return new, tuple(events)


# --- the peer's updates --------------------------------------------------------------------------


def _update_received(channel: Channel, change: UpdateReceived) -> Result:
    """Check every rule of docs/specification.md §3, then accept at once or ask the user."""
    sender, state = change.sender, change.state
    if sender != channel.peer:
        return _refuse(channel, sender, Reason.NOT_PEER, f"version {state.version}")
    current_signed = channel.current
    if current_signed is not None and current_signed.state.is_final:
        return _refuse_update(channel, sender, state, Reason.FINAL)
    if channel.phase not in RECEIVES_UPDATES or current_signed is None:
        return _refuse_update(channel, sender, state, Reason.NOT_OPEN)
    current = current_signed.state
    proof = change.proof
    if proof is None:
        reason = successor_rules(current, state)
        if reason is None and state.is_final and state.locked:
            reason = Reason.LOCKED  # a final state locks nothing (concludeFinal takes none)
    elif state.version <= current.version:
        reason = Reason.VERSION
    else:
        reason = virtual_received_rules(channel, current, state, proof)
    if reason is not None:
        return _refuse_update(channel, sender, state, reason)
    if channel.needs_sync:
        # We signed a state of this very version that the peer may hold (our update that timed
        # out). Countersigning another one now could leave two fully signed states of one
        # version; the peer's Sync tells which of them, if any, exists.
        return _refuse_update(channel, sender, state, Reason.SYNC_PENDING)
    staged = channel.staged
    if staged is not None:
        # One update in flight per channel. When both sides propose at once, both refuse: the
        # peer holds our signature on our update, so we must not sign another state of its
        # version, nor leave our user's payment hanging on the peer's.
        if staged.proposer != channel.index:
            return _refuse_update(channel, sender, state, Reason.IN_FLIGHT)
        return _refuse_update(channel, sender, state, Reason.COLLISION)
    if state.version <= channel.signed_up_to:
        # We signed another state of this version (an update of ours the peer refused), or may
        # have, before a restart.
        return _version_reject(channel, sender, state)
    digest = signing_digest(state)
    if not signed_by(digest, change.signature, channel.peer):
        return _refuse_update(channel, sender, state, Reason.SIGNATURE)
    if proof is not None:
        return await_match(channel, state, change.signature, digest, proof)
    if state.is_final:
        kind: UpdateKind | None = UpdateKind.FINAL
    elif lowers_balance(current, state, channel.index):
        kind = UpdateKind.REQUEST
    elif channel.confirm_updates:
        kind = UpdateKind.PAYMENT
    else:
        kind = None
    if kind is None:
        _check_signer(channel, change.signer)
        return _accept_peer_update(channel, state, change.signature, digest, change.signer)
    pending = Staged(channel.peer_index, state, change.signature, digest, update_id=digest)
    new = channel.evolve(
        phase=advance(channel.phase, busy(channel.phase)), staged=pending, sync_sent=False
    )
    return new, (UpdateNeedsUser(channel.channel_id, digest, state, kind),)


def _accept_peer_update(
    channel: Channel, state: State, theirs: Signature, digest: bytes, signer: Signer
) -> Result:
    """Countersign the peer's state: persist it fully signed, then answer UpdateAccept."""
    ours = signer.sign_digest(digest)
    phase = Phase.CLOSING if state.is_final else at_rest(channel.phase)
    # The write is waited for in any case (the countersignature waits for the fully signed
    # state), so it carries a raised reservation at no cost.
    version = state.version
    new = channel.evolve(
        phase=advance(channel.phase, phase),
        current=SignedState(state, _ordered(channel, ours, theirs)),
        staged=None,
        sync_sent=False,
        signed_up_to=max(channel.signed_up_to, version),
        reserved=channel.reserved if version <= channel.reserved else reservation_for(version),
    )
    accept = SendUpdateAccept(channel.peer, channel.channel_id, state.version, ours)
    if state.is_final:
        return new, (
            Persist(new),
            accept,
            NewState(channel.channel_id, state, Source.PEER),
            *_settlement(new, primary=False),
        )
    return new, (Persist(new), accept, NewState(channel.channel_id, state, Source.PEER))


def _respond_update(channel: Channel, change: RespondUpdate) -> Result:
    """Our user's answer to a pending peer update."""
    staged = channel.staged
    if staged is None or staged.proposer == channel.index or staged.update_id != change.update_id:
        raise ResourceNotFound(
            "no update awaiting an answer with this id",
            type="update",
            id="0x" + change.update_id.hex(),
        )
    if change.accept:
        _check_signer(channel, change.signer)
        return _accept_peer_update(
            channel, staged.state, staged.signature, staged.digest, change.signer
        )
    return _decline(channel, staged, Reason.USER_REJECTED)


def _user_timed_out(channel: Channel, change: UserTimedOut) -> Result:
    staged = channel.staged
    if staged is None or staged.proposer == channel.index or staged.update_id != change.update_id:
        return channel, _NOTHING
    return _decline(channel, staged, Reason.USER_TIMEOUT)


def _decline(channel: Channel, staged: Staged, reason: Reason) -> Result:
    new = channel.evolve(staged=None, phase=advance(channel.phase, at_rest(channel.phase)))
    state = staged.state
    return new, (SendUpdateReject(channel.peer, state.channel_id, state.version, reason.value),)


# --- sync ---------------------------------------------------------------------------------------


def _send_sync(channel: Channel) -> SendSync:
    current = _current(channel)
    return SendSync(channel.peer, current.state, current.signatures)


def _start_sync(channel: Channel, change: StartSync) -> Result:
    """A new connection: what was in flight on the old one is over, then send our state.

    Our update in flight becomes `abandoned` (its request died with the connection); the
    peer's update awaiting our user is dropped and rejected, since the peer gave it up too,
    and must not be countersigned after the peer learned (from our Sync) that we lack it.
    """
    if channel.current is None or channel.phase in TERMINAL:
        return channel, _NOTHING
    events: list[Event] = []
    staged = channel.staged
    persist = False
    if staged is not None:
        if staged.proposer == channel.index:
            channel, failed = _fail_own(channel, UpdateFailure.TIMED_OUT, "connection lost")
            # Persisted and synced just below, with the final value of the flags.
            events = [e for e in failed if not isinstance(e, Persist | SendSync)]
            persist = True
        else:
            channel, events = _drop_staged(channel, UpdateFailure.SUPERSEDED, "connection lost")
    fresh = channel.abandoned is not None
    if not channel.sync_sent or channel.fresh_link is not fresh:
        channel = channel.evolve(sync_sent=True, fresh_link=fresh)
    if persist:
        events.insert(0, Persist(channel))
    events.append(_send_sync(channel))
    return channel, tuple(events)


def _sync_received(channel: Channel, change: SyncReceived) -> Result:
    """Reconcile with the peer's latest fully signed state (docs/specification.md §3 Sync).

    Equal versions must be identical (else: conflict, dispute). A higher version is adopted only
    when both signatures verify and it keeps channel, assets and totals. A half-signed update in
    flight is dropped once the peer's state is known, or completed if the peer holds it fully
    signed. We answer with our own state unless we sent one since the peer last sent us anything
    but a Sync (which is what keeps two nodes from answering each other forever).
    """
    sender, theirs = change.sender, change.state
    if sender != channel.peer:
        return _refuse(channel, sender, Reason.NOT_PEER)
    if channel.phase in TERMINAL:
        return channel, _NOTHING
    if theirs.channel_id != channel.channel_id:
        return _refuse(channel, sender, Reason.WRONG_CHANNEL)
    current = channel.current
    if current is None:
        return _sync_version_zero(channel, change)
    ours = current.state
    detail = f"version {theirs.version}"
    if theirs.version < ours.version:
        reason = balance_rules(ours, theirs, locks_may_change=True)
        if reason is not None:
            return _refuse(channel, sender, reason, detail)
        return _synced(channel)
    if theirs.version == ours.version:
        if theirs == ours:
            return _synced(channel)
        if not fully_signed(signing_digest(theirs), change.signatures, channel.params):
            return _refuse(channel, sender, Reason.SIGNATURE, detail)
        return _conflict(channel, theirs)
    if ours.is_final:
        return _refuse(channel, sender, Reason.FINAL, detail)
    # Both signatures are checked below: ours on a lock or fold means we made or matched it.
    reason = balance_rules(ours, theirs, locks_may_change=True)
    if reason is not None:
        return _refuse(channel, sender, reason, detail)
    staged = channel.staged
    own = staged is not None and staged.proposer == channel.index and staged.state == theirs
    digest = staged.digest if own and staged is not None else signing_digest(theirs)
    if not fully_signed(digest, change.signatures, channel.params):
        return _refuse(channel, sender, Reason.SIGNATURE, detail)
    return _adopt(channel, SignedState(theirs, change.signatures), own)


def _synced(channel: Channel) -> Result:
    """Finish a sync that brought no newer state.

    The peer's update awaiting our user is dropped (the peer gave it up when it synced). Our
    own abandoned update is resolved only on a fresh connection: on the old one, this Sync may
    have been sent before our update reached the peer.
    """
    staged = channel.staged
    events: list[Event] = []
    if staged is not None and staged.proposer != channel.index:
        channel, events = _drop_staged(channel, UpdateFailure.SUPERSEDED, "the peer synced")
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
        events.append(_send_sync(channel))
    return channel, tuple(events)


def _adopt(channel: Channel, signed: SignedState, own: bool) -> Result:
    """Make the peer's higher fully signed state current (this resolves any abandoned update:
    the peer's state is at or above its version)."""
    dropped: list[Event] = []
    if channel.staged is not None and not own:
        channel, dropped = _drop_staged(channel, UpdateFailure.SUPERSEDED,
                                        "the peer holds a newer state")
    reply = not channel.sync_sent
    source = Source.OWN if own else Source.SYNC
    # The state carries our signature too: count its version as signed.
    new, events = _make_current(
        channel,
        signed,
        source,
        own,
        abandoned=None,
        fresh_link=False,
        sync_sent=True,
        signed_up_to=max(channel.signed_up_to, signed.state.version),
        resyncing=False,
    )
    events[1:1] = dropped
    if reply:
        events.append(_send_sync(new))
    return new, tuple(events)


def _conflict(channel: Channel, theirs: State) -> Result:
    """Two different fully signed states of one version: only the chain can settle it."""
    ours = _current(channel).state
    channel, events = _drop_staged(channel, UpdateFailure.SETTLING, "conflicting states")
    events.insert(0, Conflict(channel.channel_id, ours, theirs))
    if channel.phase in (Phase.FUNDING, Phase.OPEN):
        channel = channel.evolve(
            phase=advance(channel.phase, Phase.CLOSING), abandoned=None, fresh_link=False,
            resyncing=False,
        )
        events.insert(1, Persist(channel))
        events.append(_register(channel))
    return channel, tuple(events)


def _sync_version_zero(channel: Channel, change: SyncReceived) -> Result:
    """While proposing, the peer's Sync can only bring the proposer's signature on version 0."""
    staged = channel.staged
    if staged is None or change.state != staged.state:
        return _refuse(channel, change.sender, Reason.STALE, f"version {change.state.version}")
    if not fully_signed(staged.digest, change.signatures, channel.params):
        return _refuse(channel, change.sender, Reason.SIGNATURE, "version 0")
    reply = not channel.sync_sent
    new = channel.evolve(
        phase=advance(channel.phase, Phase.FUNDING),
        current=SignedState(staged.state, change.signatures),
        staged=None,
        sync_sent=True,
    )
    events: list[Event] = [Persist(new), _fund(new, staged.state)]
    if reply:
        events.append(_send_sync(new))
    return new, tuple(events)


# --- chain and lifecycle ------------------------------------------------------------------------


def _funded(channel: Channel, change: Funded) -> Result:
    if channel.phase is not Phase.FUNDING:
        return channel, _NOTHING
    # A peer's update may already await our user (see RECEIVES_UPDATES).
    phase = Phase.UPDATING if channel.staged is not None else Phase.OPEN
    new = channel.evolve(phase=advance(channel.phase, phase))
    return new, (Persist(new), Opened(channel.channel_id))


def _funding_expired(channel: Channel, change: FundingExpired) -> Result:
    """The peer did not fund in time: register version 0 so everyone gets their deposit back."""
    if channel.phase is not Phase.FUNDING:
        return channel, _NOTHING
    channel, dropped = _drop_staged(channel, UpdateFailure.SETTLING, "the channel was not funded")
    new = channel.evolve(phase=advance(channel.phase, Phase.CLOSING))
    return new, (Persist(new), *dropped, FundingFailed(channel.channel_id), _register(new))


def _force_close(channel: Channel, change: ForceClose) -> Result:
    """The user settles without the peer: register the latest fully signed state."""
    if channel.phase not in (Phase.FUNDING, Phase.OPEN, Phase.UPDATING):
        raise FailedPrecondition(
            f"channel is {channel.phase.value}: nothing to register",
            channel_id=channel.channel_id.hex(),
            phase=channel.phase.value,
        )
    channel, events = _drop_staged(channel, UpdateFailure.SETTLING, "the channel is being closed")
    new = channel.evolve(phase=advance(channel.phase, Phase.CLOSING))
    return new, (Persist(new), *events, _register(new))


def _registered(channel: Channel, change: Registered) -> Result:
    """A state is registered on-chain: dispute; refute with ours if it is newer."""
    if channel.phase in TERMINAL:
        return channel, _NOTHING
    if channel.dispute is not None and change.version < channel.dispute.version:
        return channel, _NOTHING  # an older event replayed; the chain only moves up
    state = State(
        channel.channel_id, change.version, channel.latest.assets, change.balances, change.is_final,
        change.locked,
    )
    channel, events = _drop_staged(channel, UpdateFailure.SETTLING, "registered on-chain")
    new = channel.evolve(
        phase=advance(channel.phase, Phase.DISPUTED),
        dispute=Dispute(change.version, change.timeout, state),
    )
    events.insert(0, Persist(new))
    events.append(Disputed(channel.channel_id, change.version, change.timeout))
    current = new.current
    if current is not None and current.state.version > change.version:
        events.append(_register(new))
    elif change.is_final:
        events.append(Conclude(channel.channel_id, channel.params, state))
    return new, tuple(events)


def _reorganised(channel: Channel, change: Reorganised) -> Result:
    """Forget the dispute as the chain had it and register our latest state again: the
    events of the new blocks rebuild the dispute (a stale registration in them is refuted), and
    a registration the chain has already is refused harmlessly."""
    if channel.phase is not Phase.DISPUTED:
        return channel, _NOTHING
    new = channel.evolve(dispute=None)
    return new, (Persist(new), *_settlement(new, primary=True))


def _challenge_expired(channel: Channel, change: ChallengeExpired) -> Result:
    if channel.phase is not Phase.DISPUTED or channel.dispute is None:
        return channel, _NOTHING
    return channel, (Conclude(channel.channel_id, channel.params, channel.dispute.state),)


def _concluded(channel: Channel, change: Concluded) -> Result:
    if channel.phase in TERMINAL:
        return channel, _NOTHING
    channel, events = _drop_staged(channel, UpdateFailure.SETTLING, "concluded on-chain")
    new = channel.evolve(phase=advance(channel.phase, Phase.CLOSED))
    params = channel.params
    if change.payouts is None or type(params) is not Params:
        # A virtual channel pays nothing itself: its parents pay its outcome.
        return new, (Persist(new), *events, Closed(channel.channel_id, change.version, None))
    ours = params.receivers[channel.index]
    paid: dict[Address, int] = {}
    for payout in change.payouts:
        if payout.receiver == ours:
            paid[payout.asset] = paid.get(payout.asset, 0) + payout.amount
    return new, (Persist(new), *events,
                 Closed(channel.channel_id, change.version, tuple(paid.items())))


def _chain_lost(channel: Channel, change: ChainLost) -> Result:
    """Give the channel up: whatever was in flight fails, nothing more is signed or sent."""
    if channel.phase in TERMINAL:
        return channel, _NOTHING
    channel, events = _drop_staged(channel, UpdateFailure.SETTLING, "the chain lost the channel")
    new = channel.evolve(phase=advance(channel.phase, Phase.CHAIN_LOST))
    return new, (Persist(new), *events, Lost(channel.channel_id, change.detail))


def _lock_failed(channel: Channel, change: LockFailed) -> Result:
    """A virtual channel whose lock in our parent cannot become fully signed: nothing of ours
    is locked for it, so it closes (docs/protocol.md: the half-funded proposal is worthless)."""
    if not is_virtual(channel) or channel.phase not in (Phase.PROPOSING, Phase.FUNDING):
        return channel, _NOTHING
    # A channel still proposing keeps its half-signed version 0: it has no other state.
    staged = channel.staged if channel.current is None else None
    new = channel.evolve(phase=advance(channel.phase, Phase.CLOSED), staged=staged)
    return new, (Persist(new), FundingFailed(channel.channel_id),
                 Closed(channel.channel_id, channel.version))


def _match_failed(channel: Channel, change: MatchFailed) -> Result:
    """We are the intermediary: the peer's lock or fold found no match in time; refuse it."""
    staged = channel.staged
    if staged is None or staged.proposer == channel.index or staged.update_id != change.update_id:
        return channel, _NOTHING
    return _decline(channel, staged, Reason.NO_MATCH)


def _restored(channel: Channel, change: Restored) -> Result:
    """Resume after a restart: what was in flight is over, what the phase needs is redone.

    Writes made without waiting may be lost, so we resume above our reservation
    (`signed_up_to`) and, where updates happen, wait for the peer's Sync (`resyncing`) before
    signing anything (docs/protocol.md, "Durability by interest"). Our update in flight becomes
    `abandoned` (the peer may have countersigned it before we went down); the peer's update
    awaiting our user is dropped and answered with a reject.
    """
    if channel.phase in TERMINAL:
        return channel, _NOTHING
    if is_virtual(channel) and channel.phase is Phase.PROPOSING:
        # A virtual channel we accepted whose version 0 the proposer had not countersigned
        # before we stopped: nothing is locked for it (locks need a fully signed version 0),
        # and nobody waits for it any more.
        return _lock_failed(channel, LockFailed("restarted before version 0 was fully signed"))
    channel = channel.evolve(
        sync_sent=False,
        fresh_link=False,
        signed_up_to=max(channel.signed_up_to, channel.reserved),
        resyncing=channel.current is not None and channel.phase in RECEIVES_UPDATES,
    )
    staged = channel.staged
    events: list[Event] = []
    if staged is not None and channel.current is not None:
        channel, events = _drop_staged(channel, UpdateFailure.RESTART, "the node restarted")
        if staged.proposer == channel.index:
            channel = channel.evolve(abandoned=staged)
        events.insert(0, Persist(channel))
    if channel.phase is Phase.FUNDING:
        events.append(_fund(channel, _current(channel).state))
    elif channel.phase is Phase.CLOSING or channel.phase is Phase.DISPUTED:
        # Disputed: the refutation may not have left before the restart (the chain ignores a
        # registration it already has). An expired challenge is the watcher's to report.
        events.extend(_settlement(channel, primary=False))
    return channel, tuple(events)


_HANDLERS: Final[dict[type, Callable[[Channel, Any], Result]]] = {
    OwnUpdate: _own_update,
    RespondUpdate: _respond_update,
    ForceClose: _force_close,
    UpdateReceived: _update_received,
    UpdateAcceptReceived: _accept_received,
    UpdateRejectReceived: _reject_received,
    SyncReceived: _sync_received,
    UpdateTimedOut: _timed_out,
    UserTimedOut: _user_timed_out,
    StartSync: _start_sync,
    Restored: _restored,
    Funded: _funded,
    FundingExpired: _funding_expired,
    Registered: _registered,
    ChallengeExpired: _challenge_expired,
    Concluded: _concluded,
    Reorganised: _reorganised,
    ChainLost: _chain_lost,
    LockFailed: _lock_failed,
    MatchFailed: _match_failed,
}
