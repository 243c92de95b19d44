"""What a session keeps of its own updates' memos while they are in flight (docs/storage.md):
the store's meta records `memo:<channel ID hex>:<version>`, format `format version (1 byte) ‖
msgpack [[amounts, request, reference], ...]`, one entry per part, `amounts` one minimal
big-endian integer per asset as in a channel record, `reference` a string or nil.

Only a memo that says more than its update's net (several payments merged, or a reference)
is kept: for any other the history's record of the net payment is the same. Decoding is strict
(`StoreCorrupt` naming the record).
"""

from __future__ import annotations

from typing import Final

from perund.channel.memo import MAX_PARTS, Memo, PaymentPart, reference_problem
from perund.channel.types import MAX_ASSETS, ChannelID
from perund.errors import StoreCorrupt, StoreError
from perund.storage import codec

PREFIX: Final = "memo:"


def memo_name(channel_id: ChannelID, version: int) -> str:
    """The meta name of the memo of our update to `version` of the channel."""
    return f"{PREFIX}{channel_id.hex()}:{version}"


def parse_name(name: str) -> tuple[ChannelID, int] | None:
    """The channel and version a meta name of `memo_name`'s form names, or None."""
    channel_hex, _, version = name[len(PREFIX):].partition(":")
    try:
        channel_id = bytes.fromhex(channel_hex)
    except ValueError:
        return None
    if len(channel_id) != 32 or not version.isdigit() or len(version) > 20:
        return None
    return ChannelID(channel_id), int(version)


def worth_keeping(memo: Memo) -> bool:
    """Whether `memo` says more than its update's net payment: several parts, or a reference."""
    if len(memo) == 1:
        return memo[0].reference is not None  # the common case, without a generator
    return len(memo) > 1


def encode_memo(memo: Memo) -> bytes:
    """The stored bytes of `memo`; `StoreError` for one the format cannot hold."""
    if not 0 < len(memo) <= MAX_PARTS:
        raise StoreError(f"a memo holds 1..{MAX_PARTS} parts")
    return codec._pack(tuple(
        (tuple(codec._e_big(amount) for amount in part.amounts), bool(part.request),
         part.reference)
        for part in memo))


def decode_memo(value: bytes) -> Memo:
    """The memo stored in `value`."""
    body = codec._unpack(value, "memo")
    if type(body) is not tuple or not 0 < len(body) <= MAX_PARTS:
        raise StoreCorrupt(f"memo record must hold 1..{MAX_PARTS} parts")
    parts = []
    for row in body:
        amounts, request, reference = codec._d_tuple(row, 3, "memo part")
        if type(amounts) is not tuple or not 0 < len(amounts) <= MAX_ASSETS:
            raise StoreCorrupt(f"memo part must hold 1..{MAX_ASSETS} amounts")
        if type(request) is not bool:
            raise StoreCorrupt("memo part's request flag must be a boolean")
        if reference is not None and (type(reference) is not str
                                      or reference_problem(reference) is not None):
            raise StoreCorrupt("memo part's reference must be a valid reference or nil")
        parts.append(PaymentPart(tuple(codec._d_big(a, "memo amount") for a in amounts),
                                 request, reference))
    return tuple(parts)
