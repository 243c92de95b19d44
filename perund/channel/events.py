"""What the core asks its shell to do or to tell: the outputs of every transition.

The shell executes events **in order**, a transition's and those of the transitions after it:
a `Persist` with `wait` means the write must be durable (fsync'd, group commit is fine) before
any later event is executed, a `Persist` without `wait` is written in the next commit and holds
nothing back (docs/specification.md §5, docs/protocol.md "Durability by interest").
Events carry everything their execution needs, so the shell never has to look at the channel
value to act on one.

Naming rule (the inputs follow theirs in `perund.channel.changes`):

- a **command**, which the shell carries out, is an imperative: `Persist`, `Send<Message>`,
  `Fund`, `Register`, `Conclude`, `ConcludeFinal`;
- a **report**, which the shell passes on to whoever waits (the user's request, the observers,
  the log), names what happened in the past tense (`Opened`, `Closed`, `Disputed`, `Refused`,
  `UpdateFailed`, `ProposalReceived`) or the state of affairs it describes (`NewState`,
  `Conflict`, `UpdateNeedsUser`).

Enumerations that qualify a report are named for the question they answer: `Reason` (why a
peer's message was refused), `UpdateFailure` (why our update did not complete), `Source` (where
a new state came from), `UpdateKind`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from perund.channel.types import (
    Address,
    ChannelID,
    Params,
    Signature,
    State,
    VirtualParams,
    VirtualProof,
)
from perund.errors import PerundError

if TYPE_CHECKING:
    from perund.channel.records import Channel


class Reason(enum.Enum):
    """Why the core refused something a peer sent. The value is the text for wire rejects."""

    # Any message about a channel
    WRONG_CHANNEL = "state is for another channel"
    NOT_PEER = "sender is not the peer of this channel"
    SIGNATURE = "signature does not verify"
    # Updates
    NOT_OPEN = "channel does not accept updates in its phase"
    FINAL = "current state is final"
    VERSION = "version is not above both the current one and every version we signed"
    ASSETS = "assets changed"
    TOTALS = "per-asset totals changed"
    NEGATIVE = "negative balance"
    LOCKED = "locked funds changed otherwise than by a virtual channel's lock or fold"
    VIRTUAL = "the lock or fold is not exactly what the virtual channel's state implies"
    NO_MATCH = "no matching lock or fold came from the virtual channel's other ledger"
    IN_FLIGHT = "another update is in flight"
    COLLISION = "both sides proposed an update at once: both are refused"
    SYNC_PENDING = "our last update is unresolved: sync first"
    NOTHING_STAGED = "no such update in flight"
    USER_REJECTED = "rejected by the user"
    USER_TIMEOUT = "the user did not answer in time"
    WITHDRAWN = "the peer withdrew its update before our user answered"
    NEWER_STATE = "the peer holds a newer state"
    HOLDS_NOTHING_OF_OURS = ("the peer says it holds the channel closed or does not know it, "
                             "but the channel holds nothing of ours: it stays open (its "
                             "deposits are the peer's, freed by a close of ours, a dispute)")
    # Sync
    STALE = "not a successor of our state"
    CONFLICT = "a different fully signed state of the same version"
    # Proposals
    CHALLENGE_DURATION = "challenge duration outside the allowed range"
    ASSET_LIST = "assets must be distinct, ETH first, at least one"
    BALANCES = ("balances must be uint256 per asset and participant, each at most 2^128-2 (what "
                "the Adjudicator holds of one deposit), not all zero")
    CHAIN = "proposal is for another chain"
    ADJUDICATOR = "proposal is for another adjudicator"
    SELF = "proposer is ourselves"
    UNKNOWN_PEER = "proposer is not a contact"
    SENDER = "sender is not the proposer"
    MALFORMED = "malformed field"
    NO_LEDGER = "no open ledger channel with the intermediary covers the virtual channel"
    INTERMEDIARY = "the intermediary is not one of our contacts, or is a party itself"
    NO_SUCH_PROPOSAL = "no such proposal"


class UpdateFailure(enum.Enum):
    """Why our own update did not complete (`UpdateFailed.failure`)."""

    REJECTED = "rejected"
    """The peer refused it (`reason` says why); the shell maps it to PeerRejected."""
    TIMED_OUT = "timed out"
    """No answer in time; the shell maps it to PeerRequestTimedOut."""
    COLLISION = "collision"
    """The peer proposed an update at the same time; both are refused (the shell may retry)."""
    SUPERSEDED = "superseded"
    """A sync showed a different state at or above its version."""
    SETTLING = "settling"
    """The channel went to the chain (registered or concluded) while it was in flight."""
    RESTART = "restart"
    """The node restarted while it was in flight."""


class Source(enum.Enum):
    """Where a new fully signed state came from."""

    OWN = "own"
    """Our update, countersigned by the peer: report success to the user who asked for it."""
    PEER = "peer"
    """The peer's update, accepted by us (automatically or by our user)."""
    SYNC = "sync"
    """Adopted from the peer's fully signed state during a sync."""


class UpdateKind(enum.Enum):
    """What an incoming update does to us, for the user's decision."""

    PAYMENT = "payment"
    """No balance of ours decreases (shown only when the user confirms every update)."""
    REQUEST = "request"
    """Some balance of ours decreases: the peer asks us to pay."""
    FINAL = "final"
    """It finalises the channel."""


@dataclass(frozen=True, slots=True)
class Persist:
    """Write the channel record; with `wait`, durably before executing any event that follows.

    Without `wait` nothing that follows depends on the write: a payment of ours the payee has
    countersigned (and so holds). Without `write` nothing is written at all: the store only
    takes `channel` as its view (the base from which the next record's payments are derived),
    for our staged update within our reservation, which nothing needs after a restart.
    """

    channel: Channel
    wait: bool = True
    write: bool = True
    by_us: bool = False
    """Whether we proposed the state this write makes current: our update, or one a sync brings
    back (a state we countersigned is never lost: it is durable before our countersignature
    leaves, docs/protocol.md). The payment history labels the state's payments by it."""


@dataclass(frozen=True, slots=True)
class SendAccept:
    """Send the proposal's `Accept` (responder's version-0 signature included)."""

    peer: Address
    proposal_id: bytes
    nonce_share: bytes
    participant: Address
    receiver: Address
    signature: Signature


@dataclass(frozen=True, slots=True)
class SendReject:
    """Send a proposal `Reject`."""

    peer: Address
    proposal_id: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class SendUpdate:
    """Send `Update{state, signature}` as a request (answer: UpdateAccept / UpdateReject).

    With a `proof`, the update locks funds for a virtual channel (`VirtualLock`) or folds its
    outcome back (`VirtualFold`), and the proof goes with it."""

    peer: Address
    state: State
    signature: Signature
    proof: VirtualProof | None = None


@dataclass(frozen=True, slots=True)
class SendVirtualAccept:
    """Send `VirtualAccept` (our signature on the virtual channel's version 0 included)."""

    peer: Address
    proposal_id: bytes
    nonce_share: bytes
    participant: Address
    parent: ChannelID
    signature: Signature


@dataclass(frozen=True, slots=True)
class SendUpdateAccept:
    """Send `UpdateAccept` (also how the proposer delivers its version-0 signature)."""

    peer: Address
    channel_id: ChannelID
    version: int
    signature: Signature


@dataclass(frozen=True, slots=True)
class SendUpdateReject:
    """Send `UpdateReject`."""

    peer: Address
    channel_id: ChannelID
    version: int
    reason: str


@dataclass(frozen=True, slots=True)
class SendSync:
    """Send `Sync` with our latest fully signed state; `awaiting` is the version of our update
    still in flight (0: none), which the Sync then does not withdraw."""

    peer: Address
    state: State
    signatures: tuple[Signature, Signature]
    awaiting: int = 0


@dataclass(frozen=True, slots=True)
class SendChannelClosed:
    """Send `ChannelClosed`: we hold the channel closed without having settled it on-chain (or
    hold it closed at all, answering the peer's Sync), and sign nothing more on it. A peer that
    still takes it for live settles it on-chain and gets back what it deposited."""

    peer: Address
    channel_id: ChannelID
    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A peer's message was refused; the channel is unchanged. The shell logs it (and sends
    whatever reject the other events of the transition name)."""

    channel_id: ChannelID
    sender: Address
    reason: Reason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ProposalReceived:
    """A valid proposal awaits the user's decision (accept_proposal / a Reject)."""

    peer: Address
    proposal_id: bytes


@dataclass(frozen=True, slots=True)
class ProposalRefused:
    """An incoming proposal or acceptance was refused (a SendReject may follow)."""

    peer: Address
    proposal_id: bytes
    reason: Reason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class NewState:
    """A new fully signed state is current (already persisted by a preceding `Persist`)."""

    channel_id: ChannelID
    state: State
    source: Source


@dataclass(frozen=True, slots=True)
class UpdateFailed:
    """Our update of `version` failed; the staged state is dropped."""

    channel_id: ChannelID
    version: int
    failure: UpdateFailure
    reason: str = ""
    cause: PerundError | None = None
    """The shell's own account of a timeout (`UpdateTimedOut.cause`), handed back unchanged so
    that the user is told what happened (unreachable, disconnected, ...)."""


@dataclass(frozen=True, slots=True)
class UpdateNeedsUser:
    """The peer's update awaits our user's `RespondUpdate` (or the shell's `UserTimedOut`)."""

    channel_id: ChannelID
    update_id: bytes
    state: State
    kind: UpdateKind


@dataclass(frozen=True, slots=True)
class UpdateWithdrawn:
    """A peer update that awaited our user is gone (the peer synced or the channel settles);
    the user's pending question should be withdrawn."""

    channel_id: ChannelID
    update_id: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Fund:
    """Deposit our share and watch until every participant's share is held on-chain.

    Deposit `balances[a][index]` of `assets[a]` for each asset (skipping what is already there),
    then feed `Funded` once `holdings(channel_id, a)` cover `balances[a]` for every asset, or
    `FundingExpired` at the funding deadline.
    """

    channel_id: ChannelID
    params: Params
    index: int
    assets: tuple[Address, ...]
    balances: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, slots=True)
class LockParent:
    """A virtual channel's version 0 is fully signed: lock our share and the peer's in our
    ledger channel `parent` (an update carrying `proof`); once that lock is fully signed, feed
    the virtual channel `Funded`, or `LockFailed` if it cannot be."""

    channel_id: ChannelID
    parent: ChannelID
    proof: VirtualProof


@dataclass(frozen=True, slots=True)
class FoldParent:
    """A virtual channel's final state is fully signed: fold its outcome into our ledger
    channel `parent` (an update carrying `proof`); once the fold is fully signed, feed the
    virtual channel `Concluded`; if the intermediary refuses it, dispute the parent."""

    channel_id: ChannelID
    parent: ChannelID
    proof: VirtualProof


@dataclass(frozen=True, slots=True)
class AwaitingMatch:
    """We are the intermediary: the peer's ledger update `update_id` locks or folds a virtual
    channel (`proof`); answer it (RespondUpdate) only together with the matching update on the
    virtual channel's other ledger, or refuse it (`MatchFailed`) after the lock window."""

    channel_id: ChannelID
    update_id: bytes
    proof: VirtualProof


@dataclass(frozen=True, slots=True)
class Opened:
    """The channel is funded and open for payments."""

    channel_id: ChannelID


@dataclass(frozen=True, slots=True)
class FundingFailed:
    """The peer did not fund by the deadline; version 0 is being registered to refund."""

    channel_id: ChannelID


@dataclass(frozen=True, slots=True)
class Register:
    """Call `register(params, state, signatures)` (dispute or refutation); for a state with
    locks, `registerVirtualState` for each virtual channel it funds; for a virtual channel
    (`VirtualParams`), `registerVirtualState` through our parent ledger."""

    channel_id: ChannelID
    params: Params | VirtualParams
    state: State
    signatures: tuple[Signature, Signature]
    unproven: int = 0
    """Our latest version, when `state` is older because the peer's countersignature on it
    does not verify (`steps.provable`; the shell says so); 0 otherwise."""


@dataclass(frozen=True, slots=True)
class ConcludeFinal:
    """Call `concludeFinal(params, state, signatures)`.

    `primary`: we proposed the final update, so we submit at once. Otherwise the shell submits
    only if no `Concluded` was seen within a few blocks (its choice of how many).
    """

    channel_id: ChannelID
    params: Params
    state: State
    signatures: tuple[Signature, Signature]
    primary: bool


@dataclass(frozen=True, slots=True)
class Conclude:
    """Call `conclude(params, state)` for the registered state (its challenge period is over,
    or it is final); `concludeParentState` for a state with locks. A virtual channel's
    (`VirtualParams`) is concluded with its parents: nothing to call for it."""

    channel_id: ChannelID
    params: Params | VirtualParams
    state: State


@dataclass(frozen=True, slots=True)
class Disputed:
    """A state is registered on-chain: show the version and the timeout to the user."""

    channel_id: ChannelID
    version: int
    timeout: int


@dataclass(frozen=True, slots=True)
class Conflict:
    """The peer holds a different fully signed state of our version; we dispute on-chain."""

    channel_id: ChannelID
    ours: State
    theirs: State


@dataclass(frozen=True, slots=True)
class Lost:
    """The channel is given up: the chain lacks its deposits (`detail`)."""

    channel_id: ChannelID
    detail: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The channel is concluded on-chain at `version`; `paid` is what the chain says it paid
    our receiver, per asset (pushed or credited for a withdrawal)."""

    channel_id: ChannelID
    version: int
    paid: tuple[tuple[Address, int], ...] | None = None
    """None: not known (the conclusion was learnt without its PaidOut events)."""
    credited: tuple[tuple[Address, int], ...] = ()
    """The part of `paid` the contract could not send (our receiver, or the token, refused
    the transfer) and holds for a `withdraw`, per asset."""
    off_chain: str | None = None
    """Why the channel closed without touching the chain (nothing of ours was on-chain to
    settle: a funding or version-0 timeout, a virtual lock that failed, the peer's
    `ChannelClosed`); None when it was concluded on-chain."""


Event = (
    Persist
    | SendAccept
    | SendReject
    | SendUpdate
    | SendUpdateAccept
    | SendUpdateReject
    | SendVirtualAccept
    | SendSync
    | SendChannelClosed
    | Refused
    | ProposalReceived
    | ProposalRefused
    | NewState
    | UpdateFailed
    | UpdateNeedsUser
    | UpdateWithdrawn
    | Fund
    | Opened
    | FundingFailed
    | Register
    | ConcludeFinal
    | Conclude
    | Disputed
    | Conflict
    | Closed
    | Lost
    | LockParent
    | FoldParent
    | AwaitingMatch
)
"""Every output of the core."""
