"""What a session keeps of each conclusion's payout to our receiver (docs/storage.md): the
store's meta record `payout:<channel ID hex>`, format `format version (1 byte) ‖ msgpack
[[asset, paid, credited, withdrawn_at], ...]`, one row per asset the conclusion paid us:
`paid` what the contract paid out to us (sent or credited), `credited` the part of it the
contract could not send and holds for our `withdraw`, `withdrawn_at` nil while that credit is
owed, else the unix second (the node's clock) at which the session saw it withdrawn.

Amounts are minimal big-endian bytes as in a channel record. Decoding is strict
(`StoreCorrupt` naming the record).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from perund.channel.types import MAX_ASSETS, Address, ChannelID
from perund.errors import StoreCorrupt, StoreError
from perund.storage import codec

PAYOUT_PREFIX: Final = "payout:"


@dataclass(frozen=True, slots=True)
class AssetPayout:
    """One asset of a conclusion's payout to our receiver (module doc)."""

    paid: int
    credited: int = 0
    withdrawn_at: int | None = None

    @property
    def owed(self) -> int:
        """What of the credit the contract still holds for us (as far as the session knows)."""
        return self.credited if self.withdrawn_at is None else 0


def payout_name(channel_id: ChannelID) -> str:
    """The meta name of a channel's payout record."""
    return PAYOUT_PREFIX + channel_id.hex()


def encode_payout(rows: Mapping[Address, AssetPayout]) -> bytes:
    """The stored bytes of a channel's payout, per asset."""
    if len(rows) > MAX_ASSETS:
        raise StoreError(f"a payout holds at most {MAX_ASSETS} assets")
    return codec._pack(tuple(
        (codec._e_bytes(asset, 20, "asset"), codec._e_big(row.paid), codec._e_big(row.credited),
         row.withdrawn_at)
        for asset, row in sorted(rows.items())))


def decode_payout(value: bytes) -> dict[Address, AssetPayout]:
    """A channel's payout stored in `value`."""
    body = codec._unpack(value, "payout")
    if type(body) is not tuple or len(body) > MAX_ASSETS:
        raise StoreCorrupt(f"payout record must hold at most {MAX_ASSETS} assets")
    rows: dict[Address, AssetPayout] = {}
    for row in body:
        asset, paid, credited, withdrawn_at = codec._d_tuple(row, 4, "payout")
        address = codec._d_address(asset, "payout asset")
        if address in rows:
            raise StoreCorrupt("payout record lists an asset twice")
        if withdrawn_at is not None and (type(withdrawn_at) is not int or withdrawn_at < 0):
            raise StoreCorrupt("payout withdrawn_at must be nil or a unix second")
        decoded = AssetPayout(codec._d_big(paid, "payout paid"),
                              codec._d_big(credited, "payout credited"), withdrawn_at)
        if decoded.credited > decoded.paid:
            raise StoreCorrupt("payout record credits more than it pays")
        rows[address] = decoded
    return rows
