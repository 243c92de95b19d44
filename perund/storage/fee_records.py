"""What a session keeps of intermediary fees (docs/storage.md, docs/protocol.md "Intermediary
fees"): the store's meta records

- `lockfee:<virtual channel ID hex>`: the fee the opener's node will pay in the lock of a
  virtual channel it proposed (the intermediary's quote), from the proposal until the lock is
  fully signed or fails; format `format version (1 byte) ‖ msgpack [amount, ...]`, one amount
  per asset of the virtual channel;
- `fees:<ledger channel ID hex>`: the fees earned (as intermediary) and paid (as opener) in one
  ledger channel, summed per asset; format `format version ‖ msgpack [[asset, earned, paid],
  ...]`.

Amounts are minimal big-endian bytes as in a channel record. Decoding is strict (`StoreCorrupt`
naming the record).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from perund.channel.types import MAX_ASSETS, Address, ChannelID
from perund.errors import StoreCorrupt, StoreError
from perund.storage import codec

LOCK_FEE_PREFIX: Final = "lockfee:"
LEDGER_FEES_PREFIX: Final = "fees:"


def lock_fee_name(virtual_id: ChannelID) -> str:
    """The meta name of the fee a virtual channel's lock pays."""
    return LOCK_FEE_PREFIX + virtual_id.hex()


def ledger_fees_name(ledger_id: ChannelID) -> str:
    """The meta name of a ledger channel's fee totals."""
    return LEDGER_FEES_PREFIX + ledger_id.hex()


def encode_lock_fee(fee: tuple[int, ...]) -> bytes:
    """The stored bytes of a lock's fee (one amount per asset)."""
    if not 0 < len(fee) <= MAX_ASSETS:
        raise StoreError(f"a fee holds 1..{MAX_ASSETS} amounts")
    return codec._pack(tuple(codec._e_big(amount) for amount in fee))


def decode_lock_fee(value: bytes) -> tuple[int, ...]:
    """A lock's fee stored in `value`."""
    body = codec._unpack(value, "lock fee")
    if type(body) is not tuple or not 0 < len(body) <= MAX_ASSETS:
        raise StoreCorrupt(f"lock fee record must hold 1..{MAX_ASSETS} amounts")
    return tuple(codec._d_big(amount, "lock fee") for amount in body)


def encode_ledger_fees(totals: Mapping[Address, tuple[int, int]]) -> bytes:
    """The stored bytes of a ledger's fee totals: asset → (earned, paid)."""
    return codec._pack(tuple(
        (codec._e_bytes(asset, 20, "asset"), codec._e_big(earned), codec._e_big(paid))
        for asset, (earned, paid) in sorted(totals.items())))


def decode_ledger_fees(value: bytes) -> dict[Address, tuple[int, int]]:
    """A ledger's fee totals stored in `value`."""
    body = codec._unpack(value, "ledger fees")
    if type(body) is not tuple or len(body) > MAX_ASSETS:
        raise StoreCorrupt(f"ledger fees record must hold at most {MAX_ASSETS} assets")
    totals: dict[Address, tuple[int, int]] = {}
    for row in body:
        asset, earned, paid = codec._d_tuple(row, 3, "ledger fees")
        address = codec._d_address(asset, "ledger fees asset")
        if address in totals:
            raise StoreCorrupt("ledger fees record lists an asset twice")
        totals[address] = (codec._d_big(earned, "fees earned"), codec._d_big(paid, "fees paid"))
    return totals
