"""The store's records of our in-flight updates' memos (perund.storage.memo_records): what is
kept, the round trip, and strict decoding."""

from __future__ import annotations

import msgpack
import pytest

from perund.channel.memo import PaymentPart
from perund.channel.types import ChannelID
from perund.errors import StoreCorrupt
from perund.storage.memo_records import (
    decode_memo,
    encode_memo,
    memo_name,
    parse_name,
    worth_keeping,
)

CHANNEL = ChannelID(bytes(range(32)))


def test_only_a_memo_that_says_more_than_its_net_is_kept() -> None:
    assert not worth_keeping(())
    assert not worth_keeping((PaymentPart((5,)),))
    assert worth_keeping((PaymentPart((5,), reference="inv-1"),))
    assert worth_keeping((PaymentPart((2,)), PaymentPart((3,))))


def test_a_memo_round_trips_and_its_name_parses() -> None:
    memo = (PaymentPart((0, 10**30), reference="café №1"), PaymentPart((1, 0), request=True))
    assert decode_memo(encode_memo(memo)) == memo
    assert parse_name(memo_name(CHANNEL, 2**64 - 1)) == (CHANNEL, 2**64 - 1)
    for bad in ("memo:", "memo:zz:1", "memo:" + "00" * 31 + ":1", "memo:" + "00" * 32 + ":x",
                "memo:" + "00" * 32 + ":-1", "memo:" + "00" * 32 + ":" + "9" * 21):
        assert parse_name(bad) is None, bad


@pytest.mark.parametrize("body", [
    [], [[[b"\x05"], False]], [[[b"\x00\x05"], False, None]], [[[b"\x05"], 1, None]],
    [[[b"\x05"], False, "line\nbreak"]], [[[b"\x05"], False, 7]], [[[], False, None]],
    "text",
])
def test_a_damaged_memo_record_is_refused(body: object) -> None:
    with pytest.raises(StoreCorrupt):
        decode_memo(b"\x01" + msgpack.packb(body, use_bin_type=True))
