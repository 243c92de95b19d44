"""Channel parameters and states (docs/specification.md §1), as immutable values.

Addresses are 20 raw bytes and amounts are wei as `int` throughout the core; conversion to and
from hex strings and decimal currency amounts happens only at the edges (API, chain, config).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NewType

Address = NewType("Address", bytes)
"""A 20-byte Ethereum address."""

ChannelID = NewType("ChannelID", bytes)
"""The 32-byte channel identifier, see `perund.channel.encoding.channel_id`."""

Signature = NewType("Signature", bytes)
"""A 65-byte `r ‖ s ‖ v` signature, `v ∈ {27, 28}`, low `s`."""

ETH = Address(b"\x00" * 20)
"""The asset address that stands for ether."""

UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1

MAX_ASSETS = 16
"""Most assets one channel may hold: proposals with more are refused, and the wire and store
formats hold no more."""

MAX_SUB_ALLOCS = 16
"""Most virtual channels one ledger state may lock funds for (the wire and store limit)."""


def to_address(value: str | bytes) -> Address:
    """An `Address` from 0x-hex (any case) or 20 raw bytes; ValueError otherwise."""
    if isinstance(value, bytes):
        raw = value
    else:
        text = value[2:] if value[:2] in ("0x", "0X") else value
        if len(text) != 40:
            raise ValueError(f"not a 20-byte hex address: {value!r}")
        raw = bytes.fromhex(text)
    if len(raw) != 20:
        raise ValueError(f"an address has 20 bytes, not {len(raw)}")
    return Address(raw)


def hex_address(address: bytes) -> str:
    """The EIP-55 checksummed form of a 20-byte address."""
    return _checksummed(bytes(address))


@functools.lru_cache(maxsize=4096)
def _checksummed(address: bytes) -> str:
    # The checksum is a keccak of the address: the same few peers and contracts are shown over
    # and over (every channel info names its peer), so they are hashed once.
    from eth_utils.address import to_checksum_address

    return str(to_checksum_address(address))


@dataclass(frozen=True, slots=True)
class Params:
    """What fixes a channel's identity.

    docs/specification.md §1.2: with `receivers`: the on-chain accounts that the contract pays each
    participant's outcome to. Binding them into the channel ID means no later message or
    transaction can redirect a payout (see docs/protocol.md).
    """

    challenge_duration: int
    nonce: int
    participants: tuple[Address, Address]
    receivers: tuple[Address, Address]

    def __post_init__(self) -> None:
        if not 0 < self.challenge_duration <= UINT64_MAX:
            raise ValueError("challenge duration must be in 1..2**64-1 seconds")
        if not 0 <= self.nonce <= UINT256_MAX:
            raise ValueError("nonce must be a uint256")
        if len(self.participants) != 2 or len(self.receivers) != 2:
            raise ValueError("a channel has exactly two participants and two receivers")
        for address in (*self.participants, *self.receivers):
            if len(address) != 20:
                raise ValueError("addresses have 20 bytes")
        if self.participants[0] == self.participants[1]:
            raise ValueError("the two participants must differ")


@dataclass(frozen=True, slots=True)
class VirtualParams:
    """What fixes a virtual channel's identity (docs/protocol.md "Virtual channels").

    `parents` are the IDs of the two ledger channels whose locks fund it; binding them into the
    virtual channel's ID means the contract takes its states only through those two. A virtual
    channel has no receivers: it pays out through its parents.
    """

    challenge_duration: int
    nonce: int
    participants: tuple[Address, Address]
    parents: tuple[ChannelID, ChannelID]

    def __post_init__(self) -> None:
        if not 0 < self.challenge_duration <= UINT64_MAX:
            raise ValueError("challenge duration must be in 1..2**64-1 seconds")
        if not 0 <= self.nonce <= UINT256_MAX:
            raise ValueError("nonce must be a uint256")
        if len(self.participants) != 2 or len(self.parents) != 2:
            raise ValueError("a virtual channel has two participants and two parents")
        for address in self.participants:
            if len(address) != 20:
                raise ValueError("addresses have 20 bytes")
        if self.participants[0] == self.participants[1]:
            raise ValueError("the two participants must differ")
        for parent in self.parents:
            if len(parent) != 32:
                raise ValueError("a channel ID has 32 bytes")
        if self.parents[0] == self.parents[1]:
            raise ValueError("the two parents must differ")


@dataclass(frozen=True, slots=True)
class SubAlloc:
    """Funds of a ledger state locked for one virtual channel.

    `balances[a]` is the amount of the ledger's asset a (aligned with the state's `assets`);
    virtual participant j's outcome goes to ledger participant `index_map[j]`.
    """

    channel_id: ChannelID
    balances: tuple[int, ...]
    index_map: tuple[int, int] = (0, 1)

    def __post_init__(self) -> None:
        if len(self.channel_id) != 32:
            raise ValueError("a channel ID has 32 bytes")
        for amount in self.balances:
            if not 0 <= amount <= UINT256_MAX:
                raise ValueError("locked amounts are uint256")
        if self.index_map not in ((0, 1), (1, 0)):
            raise ValueError("an index map is (0, 1) or (1, 0)")


@dataclass(frozen=True, slots=True)
class State:
    """A channel's balances at one version: `balances[a][i]` is participant i's share of asset a.

    `locked` lists the funds locked for virtual channels (empty for a plain ledger state, and then
    the state hashes exactly as it did before virtual channels existed).
    """

    channel_id: ChannelID
    version: int
    assets: tuple[Address, ...]
    balances: tuple[tuple[int, ...], ...]
    is_final: bool = False
    locked: tuple[SubAlloc, ...] = ()

    def __post_init__(self) -> None:
        if len(self.channel_id) != 32:
            raise ValueError("a channel ID has 32 bytes")
        if not 0 <= self.version <= UINT64_MAX:
            raise ValueError("version must be a uint64")
        if len(self.assets) != len(self.balances) or not self.assets:
            raise ValueError("one row of balances per asset, at least one asset")
        for row in self.balances:
            if len(row) != 2:
                raise ValueError("one balance per participant")
            for amount in row:
                if not 0 <= amount <= UINT256_MAX:
                    raise ValueError("balances are uint256")
        if self.locked:
            if len(self.locked) > MAX_SUB_ALLOCS:
                raise ValueError(f"at most {MAX_SUB_ALLOCS} sub-allocations")
            ids = {lock.channel_id for lock in self.locked}
            if len(ids) != len(self.locked):
                raise ValueError("a virtual channel is locked at most once")
            for lock in self.locked:
                if len(lock.balances) != len(self.assets):
                    raise ValueError("a sub-allocation has one amount per asset")

    def totals(self) -> tuple[int, ...]:
        """The per-asset sum of the free balances over both participants (locks excluded)."""
        return tuple(row[0] + row[1] for row in self.balances)


@dataclass(frozen=True, slots=True)
class VirtualProof:
    """A virtual channel's state with both its participants' signatures, and the channel's
    params: what a ledger update that locks funds for it (the state is version 0) or folds its
    outcome back (the state is final) carries, so that the intermediary can check it
    (docs/protocol.md "Virtual channels")."""

    params: VirtualParams
    state: State
    signatures: tuple[Signature, Signature]
    fee: tuple[int, ...] = ()
    """For a lock: what its sender pays the intermediary for it, per asset of `state`
    (docs/protocol.md "Intermediary fees"); empty when nothing is paid, and for a fold."""

    @property
    def is_fold(self) -> bool:
        """Whether this proves a final state (a fold) rather than version 0 (a lock)."""
        return self.state.is_final
