"""The channel value the core transforms: what one side knows about one channel.

Everything here is immutable and cheap to copy (`Channel.evolve` shares all unchanged
fields), because the core builds a new `Channel` for every message of every payment.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from perund.channel.phases import Phase
from perund.channel.types import (
    UINT64_MAX,
    Address,
    ChannelID,
    Params,
    Signature,
    State,
    VirtualParams,
)


class _Keep(Enum):
    """The default of `Channel.evolve`'s arguments: keep the field as it is."""

    KEEP = "keep"


KEEP: Final = _Keep.KEEP

RESERVATION_BLOCK: Final = 1000
"""Versions reserved by one waited write: signing beyond `Channel.reserved` reserves this many
(docs/protocol.md, "Durability by interest")."""


def reservation_for(version: int) -> int:
    """The `reserved` a write must carry before our signature on `version` leaves, when
    `version` is beyond the current reservation: the next `RESERVATION_BLOCK` versions."""
    return min(version + RESERVATION_BLOCK - 1, UINT64_MAX)


@dataclass(frozen=True, slots=True)
class SignedState:
    """A state with both participants' signatures, `signatures[i]` by `participants[i]`.

    Only the core builds these, after verifying both signatures, except the peer's on a payment
    of ours (see `Channel.checked`).
    """

    state: State
    signatures: tuple[Signature, Signature]


@dataclass(frozen=True, slots=True)
class Staged:
    """The one update in flight: a state carrying only its proposer's signature.

    `proposer` is a participant index. When it is ours, we wait for the peer's countersignature
    (or, for version 0 on the responder's side, for the proposer's signature); when it is the
    peer's, we wait for our user's decision, and `update_id` names it towards the user.
    `digest` is the state's signing digest, kept so it is hashed once per update.
    """

    proposer: int
    state: State
    signature: Signature
    digest: bytes
    update_id: bytes = b""


@dataclass(frozen=True, slots=True)
class Dispute:
    """What the chain says about a registration: the registered state and its timeout."""

    version: int
    timeout: int
    state: State


@dataclass(frozen=True, slots=True)
class Channel:
    """One side's view of one channel.

    `index` is our participant index (0 proposer, 1 responder). `current` is the latest fully
    signed state (None only while proposing); `staged` the one update in flight.

    `abandoned` is our update that timed out (or was in flight at a restart): we signed it, so
    the peer may hold it and countersign it. Until its fate is known (`needs_sync`) we neither
    propose nor countersign any other state, since that could leave two fully signed states of
    one version. It is resolved by the peer's late UpdateAccept (we adopt it) or UpdateReject,
    by a Sync of its version or higher, or by any Sync on a new connection (`fresh_link`, set by
    `StartSync`: nothing sent on the old connection can still arrive).

    `signed_up_to` is the highest version of any state we ever signed. We never sign a second
    state of a version we signed (the peer keeps our signature on an update it refused, and
    could countersign it later): our proposals take `max(current, signed_up_to) + 1`, versions
    may skip, and a peer's update at or below `signed_up_to` is refused.

    `reserved` is a durable bound on `signed_up_to`: a signature of ours on a version leaves only
    after a write with `reserved` at or above it is durable, so after a crash that lost later
    writes, `Restored` resumes `signed_up_to` from it (docs/protocol.md, "Durability by
    interest"). It never decreases.

    `resyncing`: we restarted and may have lost fully signed states the peer holds (writes not
    waited for), so, like `abandoned`, we neither propose nor countersign until the peer's Sync
    arrives (any Sync: every connection after a restart is a new one).

    `unfunded`: the channel went to settlement from proposing or funding (its funding failed,
    the peer registered early, or our user closed it), before every deposit was seen. The
    contract may hold less than the state's total, even nothing, and refunds what it holds; the
    start-up check expects nothing of it (perund.session.chain_check). See `settles_unfunded`.

    `checked`: while the peer's countersignature on `current` is unchecked (a payment of ours on
    a ledger channel), the latest state whose both signatures were checked; None when `current`
    itself was checked. Every state after it is an update of ours that raised none of our
    balances and kept the locks. What goes on-chain is `steps.provable`: `current` if its
    countersignature verifies, else this (docs/protocol.md, "Verification by interest").

    `funding`: while funding, once a payment moved `current` past version 0 (the peer's
    watcher may see the deposits complete before ours does: RECEIVES_UPDATES), version 0's
    balances, which are what each side deposits; None otherwise. A restart while funding
    deposits what is still missing of these, not of `current` (an audit: the payee deposited
    the payment again, and the contract gave it to the payer).

    `sync_sent`, `fresh_link` and `resyncing` are transient (reset by `Restored`, `fresh_link`
    also by `StartSync`); `sync_sent` keeps two nodes from answering each other's syncs forever
    (docs/core.md). `confirm_updates`: the user wants to approve even incoming payments.
    """

    channel_id: ChannelID
    params: Params | VirtualParams
    """`VirtualParams` for a virtual channel (perund.channel.virtual), funded by a lock in
    each participant's ledger channel with an intermediary instead of deposits."""
    index: int
    phase: Phase
    current: SignedState | None
    staged: Staged | None = None
    abandoned: Staged | None = None
    sync_sent: bool = False
    fresh_link: bool = False
    signed_up_to: int = 0
    confirm_updates: bool = False
    dispute: Dispute | None = None
    reserved: int = 0
    resyncing: bool = False
    unfunded: bool = False
    checked: SignedState | None = None
    funding: tuple[tuple[int, ...], ...] | None = None

    def evolve(
        self,
        *,
        phase: Phase | _Keep = KEEP,
        current: SignedState | _Keep | None = KEEP,
        staged: Staged | _Keep | None = KEEP,
        abandoned: Staged | _Keep | None = KEEP,
        sync_sent: bool | _Keep = KEEP,
        fresh_link: bool | _Keep = KEEP,
        signed_up_to: int | _Keep = KEEP,
        confirm_updates: bool | _Keep = KEEP,
        dispute: Dispute | _Keep | None = KEEP,
        reserved: int | _Keep = KEEP,
        resyncing: bool | _Keep = KEEP,
        unfunded: bool | _Keep = KEEP,
        checked: SignedState | _Keep | None = KEEP,
        funding: tuple[tuple[int, ...], ...] | _Keep | None = KEEP,
    ) -> Channel:
        """This channel with the given fields changed (its identity never changes).

        Built field by field through the slots' own setters (`_SLOT_SETTERS`): the dataclass's
        `__init__` sets each field of a frozen class through `object.__setattr__`, which looks
        the name up every time, and `dataclasses.replace` costs four times that again. The core
        calls this two or three times per payment.
        """
        new = _new_object(Channel)
        (s_id, s_params, s_index, s_phase, s_current, s_staged, s_abandoned, s_sync_sent,
         s_fresh_link, s_signed_up_to, s_confirm, s_dispute, s_reserved, s_resyncing,
         s_unfunded, s_checked, s_funding) = _SLOT_SETTERS
        s_id(new, self.channel_id)
        s_params(new, self.params)
        s_index(new, self.index)
        s_phase(new, self.phase if phase is KEEP else phase)
        s_current(new, self.current if current is KEEP else current)
        s_staged(new, self.staged if staged is KEEP else staged)
        s_abandoned(new, self.abandoned if abandoned is KEEP else abandoned)
        s_sync_sent(new, self.sync_sent if sync_sent is KEEP else sync_sent)
        s_fresh_link(new, self.fresh_link if fresh_link is KEEP else fresh_link)
        s_signed_up_to(new, self.signed_up_to if signed_up_to is KEEP else signed_up_to)
        s_confirm(new, self.confirm_updates if confirm_updates is KEEP else confirm_updates)
        s_dispute(new, self.dispute if dispute is KEEP else dispute)
        s_reserved(new, self.reserved if reserved is KEEP else reserved)
        s_resyncing(new, self.resyncing if resyncing is KEEP else resyncing)
        s_unfunded(new, self.unfunded if unfunded is KEEP else unfunded)
        s_checked(new, self.checked if checked is KEEP else checked)
        s_funding(new, self.funding if funding is KEEP else funding)
        return new

    @property
    def needs_sync(self) -> bool:
        """Whether we wait for the peer's Sync before signing anything: an update of ours has
        an unknown fate, or we restarted (see the class docstring)."""
        return self.abandoned is not None or self.resyncing

    @property
    def me(self) -> Address:
        """Our off-chain (signing) address."""
        return self.params.participants[self.index]

    @property
    def peer(self) -> Address:
        """The peer's off-chain (signing) address."""
        return self.params.participants[1 - self.index]

    @property
    def peer_index(self) -> int:
        """The peer's participant index."""
        return 1 - self.index

    @property
    def latest(self) -> State:
        """The state a listing shows: the fully signed one, or version 0 while proposing."""
        if self.current is not None:
            return self.current.state
        if self.staged is None:  # pragma: no cover - a proposing channel always stages v0
            raise AssertionError("channel without any state")
        return self.staged.state

    @property
    def version(self) -> int:
        """The version of `latest`."""
        return self.latest.version

    def balances_of(self, participant: int) -> tuple[int, ...]:
        """Participant `participant`'s balance of each asset in `latest`."""
        return tuple(row[participant] for row in self.latest.balances)


_new_object = object.__new__
_SLOT_SETTERS: Final = tuple(getattr(Channel, name).__set__
                             for name in Channel.__dataclass_fields__)
"""The setter of each of `Channel`'s slots, in field order (`Channel.evolve`)."""
