"""The peer messages (docs/specification.md §3 and §6) as immutable values.

Ids, addresses and signatures are raw bytes (20 / 32 / 65 bytes), amounts are wei as `int`. The
types do not validate themselves: the core builds one of these for every payment and the codec
checks every field on both encode and decode (`perund.wire.codec`), so a malformed message can
neither leave nor enter the node.

Requests and their responses share a *correlation key* (`request_key` / `response_key`), and
every message that concerns an existing channel names it (`channel_id_of`), so the channel client
can check that the sender is a participant of that channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from perund.channel.encoding import keccak
from perund.channel.memo import Memo
from perund.channel.types import Address, ChannelID, Signature, State, VirtualProof

PROTOCOL_VERSION: Final = 3
"""The peer protocol version sent in Hello; peers with a different version are refused.
2: virtual channels' lock fields and the intermediary's fee (`FeeQuery`/`FeeQuote`).
3: `ChannelClosed` (type 18). A node of version 2 drops a connection that carries one, and both
redialled and dropped in a loop until each cut the other off (an audit): refused at the
handshake instead, saying why."""

_AUTH_DOMAIN: Final = b"perund-auth"


@dataclass(frozen=True, slots=True)
class Hello:
    """First message on a connection, from both sides: who I claim to be, and my fresh nonce."""

    protocol_version: int
    address: Address
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Auth:
    """Second message from both sides: a signature over `auth_digest` of the two Hellos."""

    signature: Signature


@dataclass(frozen=True, slots=True)
class Propose:
    """A channel proposal. `balances[a] = (proposer, responder)` for asset `assets[a]`.

    `participant` is the proposer's off-chain (signing) address, `receiver` its on-chain payout
    account; `nonce_share` is the proposer's half of the channel nonce.
    """

    proposal_id: bytes
    chain_id: int
    adjudicator: Address
    challenge_duration: int
    nonce_share: bytes
    assets: tuple[Address, ...]
    balances: tuple[tuple[int, int], ...]
    participant: Address
    receiver: Address


@dataclass(frozen=True, slots=True)
class Accept:
    """The responder accepts proposal `proposal_id`; `signature` is its signature on version 0."""

    proposal_id: bytes
    nonce_share: bytes
    participant: Address
    receiver: Address
    signature: Signature


@dataclass(frozen=True, slots=True)
class Reject:
    """The responder rejects proposal `proposal_id`."""

    proposal_id: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Update:
    """A proposed next state with the proposer's signature on it, and the payments it carries
    (`memo`: their parts and references, not signed; empty when it says nothing more than the
    state)."""

    state: State
    signature: Signature
    memo: Memo = ()

    @property
    def channel_id(self) -> ChannelID:
        """The channel this update is for."""
        return self.state.channel_id

    @property
    def version(self) -> int:
        """The proposed version."""
        return self.state.version


@dataclass(frozen=True, slots=True)
class UpdateAccept:
    """The responder's countersignature on version `version` of channel `channel_id`."""

    channel_id: ChannelID
    version: int
    signature: Signature


@dataclass(frozen=True, slots=True)
class UpdateReject:
    """The responder refuses the update to `version` of channel `channel_id`."""

    channel_id: ChannelID
    version: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """The sender holds channel `channel_id` closed, or does not hold it: it signs nothing more
    on it. A receiver that still takes the channel for live settles it on-chain with its latest
    state, which gives back what it deposited (docs/protocol.md, "A channel closed without the
    chain"). Sent when a channel closes without touching the chain, and in answer to a Sync
    about a channel the sender holds closed or does not know."""

    channel_id: ChannelID
    reason: str


@dataclass(frozen=True, slots=True)
class Sync:
    """The sender's latest fully signed state: `signatures[i]` is participant i's signature.

    `awaiting` is the version of the sender's own update that is still in flight and awaits
    the receiver's answer (0: none). A Sync that only answers one of the receiver's then does
    not withdraw that update, as a Sync otherwise does (docs/core.md, Sync)."""

    state: State
    signatures: tuple[Signature, Signature]
    awaiting: int = 0

    @property
    def channel_id(self) -> ChannelID:
        """The channel this state belongs to."""
        return self.state.channel_id


@dataclass(frozen=True, slots=True)
class VirtualPropose:
    """A virtual channel proposal to the peer, funded through `intermediary`
    (docs/protocol.md "Virtual channels", opening step 1). `balances[a] = (proposer,
    responder)`; `participant` is the proposer's off-chain address, `intermediary` the
    intermediary's, `parent` the ID of the proposer's ledger channel with it."""

    proposal_id: bytes
    chain_id: int
    adjudicator: Address
    challenge_duration: int
    nonce_share: bytes
    assets: tuple[Address, ...]
    balances: tuple[tuple[int, int], ...]
    participant: Address
    intermediary: Address
    parent: ChannelID


@dataclass(frozen=True, slots=True)
class VirtualAccept:
    """The responder accepts virtual proposal `proposal_id`: its nonce share, its off-chain
    address, its ledger channel with the intermediary, and its signature on version 0."""

    proposal_id: bytes
    nonce_share: bytes
    participant: Address
    parent: ChannelID
    signature: Signature


@dataclass(frozen=True, slots=True)
class VirtualLock:
    """An update of a ledger channel (`state`, with the proposer's `signature`) that locks
    funds for a virtual channel, with that channel's fully signed version 0 (`proof`, whose
    `fee` is what the sender pays the intermediary in the same update). Answered like an
    Update: UpdateAccept or UpdateReject on the ledger's ID and version."""

    state: State
    signature: Signature
    proof: VirtualProof

    @property
    def channel_id(self) -> ChannelID:
        """The ledger channel this update is for."""
        return self.state.channel_id


@dataclass(frozen=True, slots=True)
class VirtualFold:
    """An update of a ledger channel that removes a virtual channel's lock and adds its outcome
    to the free balances, with that channel's fully signed final state (`proof`). Answered like
    an Update."""

    state: State
    signature: Signature
    proof: VirtualProof

    @property
    def channel_id(self) -> ChannelID:
        """The ledger channel this update is for."""
        return self.state.channel_id


@dataclass(frozen=True, slots=True)
class FeeQuery:
    """The opener of a virtual channel asks the intermediary its fee for one that holds
    `totals[a]` of `assets[a]` (docs/protocol.md "Intermediary fees"). Answered like a
    proposal: FeeQuote, or Reject with the reason (the node does not serve as intermediary)."""

    query_id: bytes
    assets: tuple[Address, ...]
    totals: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FeeQuote:
    """The intermediary's fee for the virtual channel of FeeQuery `query_id`, per asset of the
    query (what its check of the opener's lock demands)."""

    query_id: bytes
    fee: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness probe; the peer layer answers it with a Pong carrying the same nonce."""

    nonce: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to a Ping."""

    nonce: bytes


Message = (
    Hello
    | Auth
    | Propose
    | Accept
    | Reject
    | Update
    | UpdateAccept
    | UpdateReject
    | Sync
    | ChannelClosed
    | Ping
    | Pong
    | VirtualPropose
    | VirtualAccept
    | VirtualLock
    | VirtualFold
    | FeeQuery
    | FeeQuote
)
"""Any peer message."""

HANDSHAKE_MESSAGES: Final = (Hello, Auth)
"""The only messages allowed before a connection is authenticated (and never after)."""

CorrelationKey = tuple[str, bytes] | tuple[str, bytes, int]
"""A request's key equals the key of its response."""


def request_key(msg: Message) -> CorrelationKey | None:
    """The correlation key of a request (Propose, Update, Ping, their virtual-channel forms
    VirtualPropose, VirtualLock, VirtualFold, and FeeQuery, answered like a proposal), else
    None."""
    if isinstance(msg, (Update, VirtualLock, VirtualFold)):
        return ("update", msg.state.channel_id, msg.state.version)
    if isinstance(msg, (Propose, VirtualPropose)):
        return ("propose", msg.proposal_id)
    if isinstance(msg, FeeQuery):
        return ("propose", msg.query_id)
    if isinstance(msg, Ping):
        return ("ping", msg.nonce)
    return None


def response_key(msg: Message) -> CorrelationKey | None:
    """The correlation key of a response (Accept/VirtualAccept/Reject,
    UpdateAccept/UpdateReject, FeeQuote, Pong)."""
    if isinstance(msg, (UpdateAccept, UpdateReject)):
        return ("update", msg.channel_id, msg.version)
    if isinstance(msg, (Accept, VirtualAccept, Reject)):
        return ("propose", msg.proposal_id)
    if isinstance(msg, FeeQuote):
        return ("propose", msg.query_id)
    if isinstance(msg, Pong):
        return ("ping", msg.nonce)
    return None


def channel_id_of(msg: Message) -> ChannelID | None:
    """The channel a message concerns (Update, UpdateAccept, UpdateReject, Sync, ChannelClosed,
    and the ledger
    of a VirtualLock or VirtualFold), else None.

    Proposal messages name no channel yet (the ID is computed once both nonce shares are known).
    """
    if isinstance(msg, (Update, Sync, VirtualLock, VirtualFold)):
        return msg.state.channel_id
    if isinstance(msg, (UpdateAccept, UpdateReject, ChannelClosed)):
        return msg.channel_id
    return None


def auth_digest(
    dialer_nonce: bytes,
    listener_nonce: bytes,
    dialer_address: Address,
    listener_address: Address,
) -> bytes:
    """What both sides sign in Auth (docs/specification.md §6).

    keccak256("perund-auth" ‖ dialer nonce ‖ listener nonce ‖ dialer address ‖ listener address):
    ordered by role, so both ends of a connection sign the same 32 bytes, and bound to both fresh
    nonces, so a signature is worthless on any other connection.
    """
    return bytes(
        keccak(_AUTH_DOMAIN + dialer_nonce + listener_nonce + dialer_address + listener_address)
    )
