"""What the chain backend hands back: receipts, decoded events and channel records, as values.

Plain frozen dataclasses in the core's shapes (raw bytes for hashes and addresses, int for wei),
so they cross from the chain thread pool to the reactor thread and into the core unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Phase(enum.IntEnum):
    """A channel's phase in the Adjudicator (`channelStatus().phase`)."""

    NONE = 0
    """Never registered nor concluded: open, or unknown to the contract."""
    DISPUTE = 1
    """A state is registered and its challenge period runs."""
    CONCLUDED = 2
    """Settled and paid out."""


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """The Adjudicator's record of one channel.

    Once concluded the contract keeps only that fact: version, timeout and hash read as 0 (the
    `Concluded` event carries the version).
    """

    phase: Phase
    version: int
    timeout: int
    """Unix time at which a registered state may be concluded (0 when never registered)."""
    state_hash: bytes


@dataclass(frozen=True, slots=True)
class ChainEvent:
    """One decoded Adjudicator event, with its position on the chain.

    Events sort by `(block_number, log_index)`, the order the chain emitted them in; a watcher
    persists the last block it processed and asks for the next range from there.
    """

    block_number: int
    log_index: int
    tx_hash: bytes
    name: str
    args: Mapping[str, Any] = field(hash=False)
    """The event's arguments by ABI name: addresses as 20 bytes, bytes32 as bytes, ints."""

    @property
    def channel_id(self) -> bytes | None:
        """The channel the event is about, for the events that carry one."""
        value = self.args.get("channelID")
        return value if isinstance(value, bytes) else None

    @property
    def position(self) -> tuple[int, int]:
        """`(block_number, log_index)`: the event's place in the chain's order."""
        return (self.block_number, self.log_index)


@dataclass(frozen=True, slots=True)
class TxReceipt:
    """A summary of a mined, successful transaction."""

    tx_type: str
    tx_hash: bytes
    block_number: int
    gas_used: int
    effective_gas_price: int
    events: tuple[ChainEvent, ...] = ()
    contract_address: bytes | None = None
    """The new contract's address, for a deployment."""
    fillers: tuple[TxReceipt, ...] = ()
    """The transfers of nothing that filled a gap of nonces before this transaction so that it
    could be mined (perund.chain.sender), mined ones only: the account paid their gas too."""

    @property
    def fee(self) -> int:
        """What the sender paid for this transaction's gas, in wei."""
        return self.gas_used * self.effective_gas_price

    @property
    def total_fee(self) -> int:
        """What the sender paid to have this transaction mined, in wei: its own gas and its
        gap fillers' (`fillers`)."""
        return self.fee + sum(filler.fee for filler in self.fillers)

    def events_named(self, name: str) -> tuple[ChainEvent, ...]:
        """The receipt's events called `name`, in log order."""
        return tuple(event for event in self.events if event.name == name)
