"""The inputs of the channel core: what the user, the peer, the chain and the shell's timers tell
a channel. Each is a frozen value; `perund.channel.machine.transition` consumes one at a time.

Naming rule (the outputs follow theirs in `perund.channel.events`):

- a **request**, which asks the core to act and which it may refuse, is named for the action:
  the user's `OwnUpdate`, `RespondUpdate`, `ForceClose`, the shell's `StartSync`;
- a **message** from the peer is the wire message's name followed by `Received`
  (`UpdateReceived`, `SyncReceived`);
- **news**, a fact the core can only take note of, is named in the past tense: from the shell's
  timers, the store and the peer links (`UpdateTimedOut`, `UserTimedOut`, `Restored`,
  `Relinked`) and from the chain
  (`Funded`, `Registered`, `Concluded`, `ChainLost`).

Inputs that make the core sign carry the `Signer` (signing is deterministic and does no I/O);
inputs from the peer carry the authenticated sender's address.
"""

from __future__ import annotations

from dataclasses import dataclass

from perund.channel.encoding import Signer
from perund.channel.types import Address, ChannelID, Signature, State, SubAlloc, VirtualProof
from perund.errors import PerundError

# --- from the user -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OwnUpdate:
    """Propose the next state: `transfers` are `(asset, amount)` moved from us to the peer
    (a negative amount requests that much from the peer); `is_final` closes the channel.

    With a `proof` (and no transfers) the update locks funds for a virtual channel (the proof
    holds its version 0) or folds its outcome back (its final state) instead."""

    signer: Signer
    transfers: tuple[tuple[Address, int], ...]
    is_final: bool = False
    proof: VirtualProof | None = None


@dataclass(frozen=True, slots=True)
class RespondUpdate:
    """Our user's answer to `UpdateNeedsUser(update_id)`."""

    signer: Signer
    update_id: bytes
    accept: bool


@dataclass(frozen=True, slots=True)
class ForceClose:
    """Settle on-chain without the peer: register our latest fully signed state."""


# --- from the peer -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpdateReceived:
    """The peer's `Update{state, signature}`. `signer` countersigns if policy accepts at once.

    With a `proof`, the peer's `VirtualLock` or `VirtualFold`: we are the intermediary, and
    answer only once the matching update on the other ledger came (`AwaitingMatch`). The shell
    has checked that the proof's virtual channel ID is its params' on our deployment."""

    sender: Address
    state: State
    signature: Signature
    signer: Signer
    proof: VirtualProof | None = None


@dataclass(frozen=True, slots=True)
class UpdateAcceptReceived:
    """The peer's `UpdateAccept` (for version 0: the proposer's signature on version 0)."""

    sender: Address
    channel_id: ChannelID
    version: int
    signature: Signature


@dataclass(frozen=True, slots=True)
class UpdateRejectReceived:
    """The peer's `UpdateReject`."""

    sender: Address
    channel_id: ChannelID
    version: int
    reason: str


@dataclass(frozen=True, slots=True)
class SyncReceived:
    """The peer's `Sync`: its latest fully signed state, and the version of the peer's update
    that still awaits our answer (`awaiting`, 0: none)."""

    sender: Address
    state: State
    signatures: tuple[Signature, Signature]
    awaiting: int = 0


@dataclass(frozen=True, slots=True)
class ChannelClosedReceived:
    """The peer's `ChannelClosed`: it holds the channel closed (it gave up on the funding
    without touching the chain, or lost or retired the channel) and signs nothing more on it."""

    sender: Address
    channel_id: ChannelID
    reason: str


# --- from the shell (timers, connections, restarts) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class UpdateTimedOut:
    """Our update of `version` got no answer in time (or its connection dropped)."""

    version: int
    cause: PerundError | None = None
    """What the shell saw (timed out, disconnected, unreachable, an invalid answer): the core
    does not read it and hands it back in `UpdateFailed.cause`."""


@dataclass(frozen=True, slots=True)
class UserTimedOut:
    """Our user did not answer `UpdateNeedsUser(update_id)` before its expiry."""

    update_id: bytes


@dataclass(frozen=True, slots=True)
class StartSync:
    """A (new) authenticated connection to the peer is up: send our latest fully signed state.

    Feed it on every (re)connection and only then: the core relies on everything it sent before
    being either delivered already or lost with the old connection.
    """


@dataclass(frozen=True, slots=True)
class Relinked:
    """The connection in use changed to another one while the first was up (the lower side's
    dial replaced ours). The peer may have lost the first one behind our back, restarted, and
    be waiting on its new one for our state: answer its next Sync.

    Unlike `StartSync`, nothing in flight is given up: its request moved to the new connection,
    and when the two dials merely crossed, its answer comes there.
    """


@dataclass(frozen=True, slots=True)
class Restored:
    """The channel was loaded from the store after a restart."""


# --- from the chain ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VersionZeroLapsed:
    """We accepted the peer's proposal, and its signature on version 0 did not come in time
    (its node crashed before it kept the channel, or it went silent)."""


@dataclass(frozen=True, slots=True)
class Funded:
    """The contract holds every participant's share."""


@dataclass(frozen=True, slots=True)
class FundingExpired:
    """The funding deadline passed before `Funded`."""


@dataclass(frozen=True, slots=True)
class Registered:
    """The contract emitted `Registered(channelID, version, timeout, isFinal, balances)`, and,
    for a state with locks, `RegisteredLocks` with its `locked` sub-allocations."""

    version: int
    timeout: int
    is_final: bool
    balances: tuple[tuple[int, ...], ...]
    locked: tuple[SubAlloc, ...] = ()


@dataclass(frozen=True, slots=True)
class LockFailed:
    """A virtual channel's lock in our parent ledger cannot become fully signed (the
    intermediary refused it, or it never went out): nothing is locked for it, so it closes."""

    detail: str


@dataclass(frozen=True, slots=True)
class MatchFailed:
    """We are the intermediary: the peer's lock or fold `update_id` found no match in time."""

    update_id: bytes


@dataclass(frozen=True, slots=True)
class ChallengeExpired:
    """The chain's time reached the registered timeout."""


@dataclass(frozen=True, slots=True)
class Payout:
    """One `PaidOut` event of a conclusion: `amount` of `asset` to `receiver`, sent at once
    (`pushed`) or credited for a `withdraw`."""

    receiver: Address
    asset: Address
    amount: int
    pushed: bool


@dataclass(frozen=True, slots=True)
class Concluded:
    """The contract emitted `Concluded(channelID, version)`, and with it `payouts` (the
    `PaidOut` events of the same transaction): what the chain says it paid."""

    version: int
    payouts: tuple[Payout, ...] | None = None
    """None: the conclusion was learnt without its events (what it paid is not known)."""


@dataclass(frozen=True, slots=True)
class ChainLost:
    """At start, the chain was found to lack what the channel holds (`detail` says what): the
    operator chose to go on, so the channel is given up."""

    detail: str


@dataclass(frozen=True, slots=True)
class ConclusionLost:
    """At start, or after the watcher found blocks it had read replaced or gone, the chain was
    found not to have concluded a channel the store holds as closed, while the contract still
    holds its deposits: the chain lost the blocks of its
    conclusion (a dev chain stopped between its state saves, a reorganisation deeper than the
    confirmations). The channel settles again from its latest fully signed state."""


@dataclass(frozen=True, slots=True)
class Reorganised:
    """A reorganisation deeper than the confirmations replaced blocks whose events the core
    has had: what it knows of a dispute may be gone from the chain (our refutation with it).
    The events of the new blocks follow."""


Change = (
    OwnUpdate
    | RespondUpdate
    | ForceClose
    | UpdateReceived
    | UpdateAcceptReceived
    | UpdateRejectReceived
    | SyncReceived
    | ChannelClosedReceived
    | UpdateTimedOut
    | UserTimedOut
    | StartSync
    | Relinked
    | Restored
    | Funded
    | FundingExpired
    | Registered
    | ChallengeExpired
    | Concluded
    | Reorganised
    | ChainLost
    | ConclusionLost
    | LockFailed
    | MatchFailed
    | VersionZeroLapsed
)
"""Every input of `transition`."""
