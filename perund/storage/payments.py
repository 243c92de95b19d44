"""Payment records: what the history keeps of each payment, their byte format, and how they
follow from two consecutive values of a channel.

The store derives a channel's payments from the values it is given (`payments_between`): a
payment is in the history exactly when the state it produced is in the store, because both are
written in the same commit (docs/storage.md, "Payment history"). A record is one asset's change
of one update; an update that moves two assets is two records with the same version.

Format: `format version (1 byte) ‖ msgpack array` of `[id, channel ID, peer, direction, asset,
amount (minimal big-endian bytes), version or nil, time, request, status, reference or nil]`.
Decoding is strict and raises `StoreCorrupt` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import msgpack

from perund.channel.memo import MAX_REFERENCE, Memo, parts_match
from perund.channel.records import Channel
from perund.channel.types import UINT64_MAX, UINT256_MAX, Address, ChannelID
from perund.errors import StoreCorrupt, StoreError
from perund.storage import codec

FORMAT_VERSION: Final = 1
_FORMAT_BYTE: Final = bytes((FORMAT_VERSION,))
_LATEST_TIME: Final = 253402300800.0
"""Unix time of 10000-01-01: later times are no dates (Python's datetime ends there)."""

Direction = Literal["sent", "received"]
Status = Literal["paid", "rejected", "expired"]

DIRECTIONS: Final[tuple[Direction, ...]] = ("sent", "received")
STATUSES: Final[tuple[Status, ...]] = ("paid", "rejected", "expired")



@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """One payment as a session's history keeps it.

    `payment_id` rises with every record of the session. `direction` is seen from this
    session; `amount` is in the asset's base units. `version` is the channel version the
    payment produced (None for a request that was rejected or expired: it produced none).
    `request` says whether the party receiving the money asked for it (a payment request);
    `status` how it ended. `time` is the node's unix time when the record was made.
    """

    payment_id: int
    channel_id: ChannelID
    peer: Address
    direction: Direction
    asset: Address
    amount: int
    version: int | None
    time: float
    request: bool = False
    status: Status = "paid"
    reference: str | None = None


def payments_between(old: Channel | None, new: Channel, now: float, first_id: int,
                     memo: Memo = (), by_us: bool = False) -> list[PaymentRecord]:
    """The payments that turned channel value `old` into `new` (numbered from `first_id`):
    one record per asset whose balance of ours changed between their fully signed states, or,
    when the update's `memo` adds up to that change, one per part and asset, with the parts'
    references.

    Opening (no earlier fully signed state), states that move nothing (a final state, a
    registration) and a virtual channel's lock or fold make none. Who proposed the new state
    (`by_us`, as the core says: our update, or a state a sync brought back, since the states we
    lack are always ones we proposed) decides whether it was a request: a payment moves money
    away from its proposer, a request towards it.
    """
    if old is None or old.current is None or new.current is None or new.current is old.current:
        return []  # the last test is the common case: a put that changes no signed state
    before, after = old.current.state, new.current.state
    if after.version <= before.version or after.locked != before.locked:
        # A virtual channel's lock or fold moves money between free and locked: it pays no
        # one here (the virtual channel's own history has its payments).
        return []
    ours = new.index
    if memo:
        proposer = ours if by_us else 1 - ours
        moved = tuple(was[proposer] - row[proposer]
                      for was, row in zip(before.balances, after.balances, strict=True))
        if parts_match(memo, moved):
            return _parts(new, after.version, memo, by_us, now, first_id)
    records: list[PaymentRecord] = []
    for asset, was, now_row in zip(after.assets, before.balances, after.balances, strict=True):
        change = now_row[ours] - was[ours]
        if change == 0:
            continue
        received = change > 0
        records.append(PaymentRecord(
            payment_id=first_id + len(records), channel_id=new.channel_id, peer=new.peer,
            direction="received" if received else "sent", asset=asset, amount=abs(change),
            version=after.version, time=now, request=received == by_us))
    return records


def _parts(channel: Channel, version: int, memo: Memo, we_proposed: bool, now: float,
           first_id: int) -> list[PaymentRecord]:
    records: list[PaymentRecord] = []
    assets = channel.current.state.assets if channel.current is not None else ()
    for part in memo:
        # A payment moves money away from its proposer, a request towards it.
        received = part.request == we_proposed
        for asset, amount in zip(assets, part.amounts, strict=True):
            if amount:
                records.append(PaymentRecord(
                    payment_id=first_id + len(records), channel_id=channel.channel_id,
                    peer=channel.peer, direction="received" if received else "sent",
                    asset=asset, amount=amount, version=version, time=now,
                    request=part.request, reference=part.reference))
    return records


def encode_payment(record: PaymentRecord) -> bytes:
    """The stored bytes of `record`; `StoreError` for a value the format cannot hold."""
    if not 0 <= record.amount <= UINT256_MAX or not 0 <= record.payment_id <= UINT64_MAX:
        raise StoreError("a payment's amount or id is out of range")
    if not 0 <= record.time < _LATEST_TIME:
        raise StoreError("a payment's time is not a date")
    if record.reference is not None and len(record.reference) > MAX_REFERENCE:
        raise StoreError("a payment's reference is too long")
    body = [record.payment_id, bytes(record.channel_id), bytes(record.peer),
            DIRECTIONS.index(record.direction), bytes(record.asset),
            record.amount.to_bytes((record.amount.bit_length() + 7) // 8, "big"),
            record.version, float(record.time), record.request,
            STATUSES.index(record.status), record.reference]
    return _FORMAT_BYTE + codec.pack(body)


def decode_payment(value: bytes) -> PaymentRecord:
    """The record stored as `value`; `StoreCorrupt` naming the field that is wrong."""
    if not value or value[0] != FORMAT_VERSION:
        raise StoreCorrupt("unknown payment record format")
    try:
        body = msgpack.unpackb(value[1:], raw=False, strict_map_key=True, use_list=True)
    except Exception:
        raise StoreCorrupt("a payment record is not msgpack") from None
    if type(body) is not list or len(body) != 11:
        raise StoreCorrupt("a payment record has the wrong number of fields")
    (payment_id, channel_id, peer, direction, asset, amount, version, time, request, status,
     reference) = body
    _check(type(payment_id) is int and 0 <= payment_id <= UINT64_MAX, "id")
    _check(_is_bytes(channel_id, 32), "channel ID")
    _check(_is_bytes(peer, 20), "peer")
    _check(direction in (0, 1) and type(direction) is int, "direction")
    _check(_is_bytes(asset, 20), "asset")
    _check(type(amount) is bytes and len(amount) <= 32 and amount[:1] != b"\0", "amount")
    _check(version is None or (type(version) is int and 0 <= version <= UINT64_MAX), "version")
    # NaN or an infinity would compare unequal to itself and break JSON (and the API's dates).
    _check(type(time) is float and 0 <= time < _LATEST_TIME, "time")
    _check(type(request) is bool, "request")
    _check(status in (0, 1, 2) and type(status) is int, "status")
    _check(reference is None or (type(reference) is str and len(reference) <= MAX_REFERENCE),
           "reference")
    return PaymentRecord(payment_id, ChannelID(channel_id), Address(peer), DIRECTIONS[direction],
                         Address(asset), int.from_bytes(amount, "big"), version, time, request,
                         STATUSES[status], reference)


def _is_bytes(value: Any, size: int) -> bool:
    return type(value) is bytes and len(value) == size


def _check(ok: bool, field: str) -> None:
    if not ok:
        raise StoreCorrupt(f"a payment record's {field} is malformed")
