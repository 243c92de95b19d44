"""The fee records of the store's meta (`lockfee:`, `fees:`): round trips, strict decoding."""

from __future__ import annotations

import msgpack
import pytest

from perund.channel.types import ETH, Address
from perund.errors import StoreCorrupt, StoreError
from perund.storage.codec import FORMAT_VERSION
from perund.storage.fee_records import (
    decode_ledger_fees,
    decode_lock_fee,
    encode_ledger_fees,
    encode_lock_fee,
)

TOKEN = Address(b"\x42" * 20)


def raw(body: object) -> bytes:
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return bytes((FORMAT_VERSION,)) + packed


def test_round_trips() -> None:
    assert decode_lock_fee(encode_lock_fee((10**15, 0))) == (10**15, 0)
    totals = {TOKEN: (0, 7), ETH: (2**255, 0)}
    assert decode_ledger_fees(encode_ledger_fees(totals)) == totals
    assert decode_ledger_fees(encode_ledger_fees({})) == {}
    with pytest.raises(StoreError):
        encode_lock_fee(())


@pytest.mark.parametrize("value", [
    b"", b"\x07" + raw([b"\x01"])[1:], raw([]), raw([b"\x00\x01"]), raw([1]), raw("x"),
    raw([b"\x01"] * 17),
])
def test_a_corrupt_lock_fee_is_refused(value: bytes) -> None:
    with pytest.raises(StoreCorrupt):
        decode_lock_fee(value)


@pytest.mark.parametrize("value", [
    raw([[ETH, b"\x01"]]), raw([[ETH[:19], b"\x01", b""]]), raw([[ETH, b"\x00", b""]]),
    raw([[ETH, b"\x01", b""], [ETH, b"", b"\x01"]]), raw({"ETH": 1}),
])
def test_corrupt_ledger_fees_are_refused(value: bytes) -> None:
    with pytest.raises(StoreCorrupt):
        decode_ledger_fees(value)
