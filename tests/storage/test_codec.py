"""The record codec: exact round trips of every durable field, strict decoding, pinned bytes."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest
from eth_hash.auto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perund.channel.changes import OwnUpdate
from perund.channel.machine import transition
from perund.channel.phases import Phase
from perund.channel.records import Channel, Dispute
from perund.channel.types import ETH, MAX_SUB_ALLOCS, ChannelID, SubAlloc
from perund.errors import StoreCorrupt, StoreError
from perund.storage.codec import (
    FORMAT_VERSION,
    PHASE_CODES,
    decode_channel,
    decode_contact,
    decode_cursor,
    encode_channel,
    encode_contact,
    encode_cursor,
)
from tests.channel.factories import ALICE, make_pair, next_state
from tests.storage.helpers import channels, durable, persisted_payments

CODEC_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@CODEC_SETTINGS
@given(channels())
def test_round_trip_keeps_every_durable_field(channel: Channel) -> None:
    assert decode_channel(encode_channel(channel)) == durable(channel)


def test_round_trip_of_every_value_two_cores_persist() -> None:
    values = list(persisted_payments(6))
    assert {c.phase for c in values} >= {Phase.PROPOSING, Phase.FUNDING, Phase.OPEN,
                                        Phase.UPDATING}
    assert any(c.current is None for c in values)
    assert any(c.staged is not None for c in values)
    for channel in values:
        assert decode_channel(encode_channel(channel)) == durable(channel)


def test_a_state_of_another_channel_is_stored_with_its_own_id() -> None:
    alice, _ = make_pair()
    assert alice.current is not None
    other = replace(alice.current.state, channel_id=ChannelID(b"\x42" * 32))
    channel = replace(alice, current=replace(alice.current, state=other))
    assert decode_channel(encode_channel(channel)) == channel
    assert len(encode_channel(channel)) == len(encode_channel(alice)) + 33


def test_layout_is_pinned() -> None:
    # Changing these bytes breaks every store on disk: bump FORMAT_VERSION and convert instead.
    alice, _ = make_pair()
    encoded = encode_channel(alice)
    assert encoded[0] == FORMAT_VERSION == 1
    assert len(encoded) == 353
    # version byte, array of 10, the channel ID as bin 8 of 32, params as an array of 6
    assert encoded[:4] == b"\x01\x9a\xc4\x20" and encoded[4:36] == alice.channel_id
    assert encoded[36:37] == b"\x96"
    assert keccak(encoded).hex() == GOLDEN_ALICE
    assert PHASE_CODES == {
        Phase.PROPOSING: 0, Phase.FUNDING: 1, Phase.OPEN: 2, Phase.UPDATING: 3,
        Phase.CLOSING: 4, Phase.DISPUTED: 5, Phase.CLOSED: 6, Phase.CHAIN_LOST: 7,
    }
    assert encode_cursor(1234) == b"\x01\xcd\x04\xd2"
    assert encode_contact({"comm_type": "tcp"}) == b"\x01\x81\xa9comm_type\xa3tcp"


GOLDEN_ALICE = "39abdf6f62e99f9a83d6c3e67ac215694dab83e9d889bd245799db5f37338bf1"


def test_a_record_from_before_signed_up_to_still_loads() -> None:
    """Records of 9 fields (before `signed_up_to`): it is derived from the states on record."""
    alice, _bob = make_pair()
    staged, _ = transition(alice, OwnUpdate(ALICE, ((ETH, 1),), False))
    for channel, expected in ((alice, 0), (staged, 1)):
        body = msgpack.unpackb(encode_channel(channel)[1:], raw=False, use_list=False)
        old = bytes([FORMAT_VERSION]) + msgpack.packb(body[:9], use_bin_type=True)
        # Then every signature waited for its write: the reservation is what was signed.
        assert decode_channel(old) == replace(channel, reserved=expected)
        assert decode_channel(old).signed_up_to == expected


def test_the_reservation_is_an_eleventh_field_only_when_it_says_more() -> None:
    """Records of 10 fields (no reservation beyond `signed_up_to`, or written before
    reservations) keep their bytes; a reservation adds an eleventh field, pinned here."""
    alice, _bob = make_pair()
    staged, _ = transition(alice, OwnUpdate(ALICE, ((ETH, 1),), False))
    assert (staged.signed_up_to, staged.reserved) == (1, 1000)
    encoded = encode_channel(staged)
    body = msgpack.unpackb(encoded[1:], raw=False, use_list=False)
    assert len(body) == 11 and body[9:] == (1, 1000)
    assert decode_channel(encoded) == staged
    assert keccak(encoded).hex() == GOLDEN_RESERVED_ALICE
    # Without the field the reservation is `signed_up_to` (records from before reservations).
    before = bytes([FORMAT_VERSION]) + msgpack.packb(body[:10], use_bin_type=True)
    assert decode_channel(before) == replace(staged, reserved=1)
    equal = replace(staged, reserved=staged.signed_up_to)
    assert len(_body(equal)) == 10 and decode_channel(encode_channel(equal)) == equal
    # Below `signed_up_to` (a peer's reject named a higher version) it is kept as it is.
    below = replace(staged, signed_up_to=5000)
    assert decode_channel(encode_channel(below)) == below


GOLDEN_RESERVED_ALICE = "b78e3c4036343a8aceb4b89b35054e0840d17ced2d744c4c27045b7d021d5c5a"


def test_the_unfunded_flag_is_a_twelfth_field_after_the_reservation() -> None:
    """A channel that settled before it was funded carries `true` as a twelfth field, with the
    reservation written out even when it equals `signed_up_to`; any other channel keeps its
    bytes. A record of 10 or 11 fields is not unfunded."""
    alice, _bob = make_pair()
    unfunded = replace(alice, phase=Phase.CLOSING, unfunded=True)
    body = msgpack.unpackb(encode_channel(unfunded)[1:], raw=False, use_list=False)
    assert len(body) == 12 and body[9:] == (0, 0, True)
    assert decode_channel(encode_channel(unfunded)) == unfunded
    assert encode_channel(replace(unfunded, unfunded=False)) \
        == encode_channel(replace(alice, phase=Phase.CLOSING))
    assert decode_channel(_pack(list(body[:11]))) == replace(unfunded, unfunded=False)
    for value in (None, 1, "true", b"\x01"):
        with pytest.raises(StoreCorrupt, match="unfunded"):
            decode_channel(_pack([*body[:11], value]))
    with pytest.raises(StoreCorrupt, match="checked must be an array of 3"):
        decode_channel(_pack([*body, True]))
    with pytest.raises(StoreCorrupt, match="array of 10"):
        decode_channel(_pack([*body, True, True, True]))
    with pytest.raises(StoreCorrupt, match="only for an unfunded channel"):
        decode_channel(_pack([*body[:11], False]))


def test_the_checked_state_is_a_thirteenth_field() -> None:
    """A payer's record while the payee's countersignature on `current` is unchecked
    (docs/protocol.md, "Verification by interest"): the reservation and the unfunded flag are
    written out, then `checked` like `current`. Pinned; every other record keeps its bytes."""
    alice, _bob = make_pair()
    staged, _ = transition(alice, OwnUpdate(ALICE, ((ETH, 1),), False))
    assert staged.staged is not None and alice.current is not None
    paid = replace(staged, staged=None, phase=Phase.OPEN, checked=alice.current,
                   current=replace(alice.current, state=staged.staged.state))
    encoded = encode_channel(paid)
    body = msgpack.unpackb(encoded[1:], raw=False, use_list=False)
    assert len(body) == 13 and body[9:12] == (1, 1000, False)
    assert body[12][1:] == alice.current.signatures
    assert decode_channel(encoded) == paid
    assert keccak(encoded).hex() == GOLDEN_CHECKED_ALICE
    assert len(encoded) - len(encode_channel(replace(paid, checked=None))) < 200
    unfunded = replace(paid, unfunded=True)
    assert decode_channel(encode_channel(unfunded)) == unfunded
    for bad, match in (
        (None, "a thirteenth field is written only with a checked state"),
        ((body[12][0], b"\x00" * 65), "checked must be an array of 3"),
        ((body[12][0], body[12][1], b"\x00" * 64), "checked signature must be 65 bytes"),
        (body[4], "checked state must be older than the current one"),
    ):
        with pytest.raises(StoreCorrupt, match=match):
            decode_channel(_pack([*body[:12], bad]))


def test_the_deposits_of_a_channel_paid_in_while_funding_are_a_fourteenth_field() -> None:
    """A channel that took a payment while funding keeps version 0's balances (what each side
    deposits) as a fourteenth field, after the reservation, the unfunded flag and `checked`
    (None here); once funded it has none and keeps its bytes. Pinned."""
    alice, _bob = make_pair()
    assert alice.current is not None
    version_0 = replace(alice, phase=Phase.FUNDING)
    paid = replace(version_0, funding=((1000, 1000),),
                   current=replace(alice.current, state=next_state(alice, version=1)))
    encoded = encode_channel(paid)
    body = msgpack.unpackb(encoded[1:], raw=False, use_list=False)
    assert len(body) == 14 and body[10:13] == (0, False, None)
    assert decode_channel(encoded) == paid
    assert keccak(encoded).hex() == GOLDEN_FUNDING_ALICE
    assert encode_channel(replace(paid, funding=None)) \
        == encode_channel(replace(version_0, current=paid.current))
    for bad, match in (
        (None, "written only with a channel's deposits"),
        ((), "one row of deposits per asset"),
        (((b"\x01",),), "deposits must be an array of 2"),
        (((b"\x01", -1),), "deposit must be"),
    ):
        with pytest.raises(StoreCorrupt, match=match):
            decode_channel(_pack([*body[:13], bad]))


GOLDEN_FUNDING_ALICE = "2cfdd90f3e1d750a596372ce16516ec7b5fa888fdcecd7a175c01c46eeed7c36"
GOLDEN_CHECKED_ALICE = "3eb15db5d748504d68ed73800c809610f3b77ee46b4bc559a2dcc1d433caad3a"


@pytest.mark.parametrize("value", [None, -1, "1000", 1.5, True, b"\x03\xe8"])
def test_a_bad_reservation_is_store_corrupt(value: object) -> None:
    staged, _ = transition(make_pair()[0], OwnUpdate(ALICE, ((ETH, 1),), False))
    body = _body(staged)
    body[10] = value
    with pytest.raises(StoreCorrupt, match="reserved"):
        decode_channel(_pack(body))


VIRTUAL_A = ChannelID(b"\x5a" * 32)
VIRTUAL_B = ChannelID(b"\x5b" * 32)


def _locked_alice() -> Channel:
    """Alice's channel whose current state locks funds for two virtual channels."""
    alice, _ = make_pair()
    assert alice.current is not None
    state = replace(
        alice.current.state,
        locked=(SubAlloc(VIRTUAL_A, (2**64,), (0, 1)), SubAlloc(VIRTUAL_B, (0,), (1, 0))),
    )
    return replace(alice, current=replace(alice.current, state=state))


def test_a_state_with_locks_keeps_them_and_its_layout_is_pinned() -> None:
    alice, _ = make_pair()
    locked = _locked_alice()
    encoded = encode_channel(locked)
    assert decode_channel(encoded) == locked
    # The state array gains a sixth field, [[id, [amount per asset], [i, j]], ...]; a state
    # without locks keeps its five (the golden record above).
    body = _body(locked)
    assert body[4][0][5] == [[VIRTUAL_A, [b"\x01" + bytes(8)], [0, 1]], [VIRTUAL_B, [b""], [1, 0]]]
    assert len(encoded) == len(encode_channel(alice)) + 92
    assert keccak(encoded).hex() == GOLDEN_LOCKED_ALICE


GOLDEN_LOCKED_ALICE = "4b30dd2f4f2407af1835aebbe7772dcd60be6dd7e473beeb443aae869b899ca0"


def test_locks_are_kept_in_every_stored_state() -> None:
    locked = _locked_alice()
    assert locked.current is not None
    state = locked.current.state
    staged, _ = transition(make_pair()[0], OwnUpdate(ALICE, ((ETH, 1),), False))
    assert staged.staged is not None
    channel = replace(
        locked,
        staged=replace(staged.staged, state=state),
        abandoned=replace(staged.staged, state=state),
        dispute=Dispute(state.version, 99, state),
    )
    decoded = decode_channel(encode_channel(channel))
    assert decoded == channel
    assert decoded.dispute is not None and decoded.dispute.state.locked == state.locked


def _lock_rows(body: list[object]) -> list[object]:
    return body[4][0][5]  # type: ignore[index, no-any-return]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b[4][0].__setitem__(5, []), "locks must be an array of 1..16"),
        (lambda b: b[4][0].__setitem__(5, None), "locks must be an array of 1..16"),
        (
            lambda b: b[4][0].__setitem__(5, [[bytes([i]) * 32, [b""], [0, 1]] for i in range(17)]),
            "locks must be an array of 1..16",
        ),
        (lambda b: b[4][0].extend([None, None]), "must be an array of 5 \\(6 with locks\\)"),
        (lambda b: _lock_rows(b)[0].pop(), "lock must be an array of 3"),
        (lambda b: _lock_rows(b)[0].__setitem__(0, b"\x01" * 31), "locked channel ID must be 32"),
        (lambda b: _lock_rows(b)[0].__setitem__(1, []), "one amount per asset"),
        (lambda b: _lock_rows(b)[0].__setitem__(1, [b"", b""]), "one amount per asset"),
        (lambda b: _lock_rows(b)[0].__setitem__(1, [b"\x00\x01"]), "locked amount must be"),
        (lambda b: _lock_rows(b)[0].__setitem__(1, [1]), "locked amount must be"),
        (lambda b: _lock_rows(b)[0].__setitem__(2, [1, 1]), "index map must be"),
        (lambda b: _lock_rows(b)[0].__setitem__(2, [0, 1, 0]), "index map must be"),
        (lambda b: _lock_rows(b)[0].__setitem__(2, [False, True]), "index map must be"),
        (lambda b: _lock_rows(b)[0].__setitem__(2, b"\x00\x01"), "index map must be"),
        (lambda b: _lock_rows(b)[1].__setitem__(0, VIRTUAL_A), "locks a virtual channel twice"),
    ],
)
def test_bad_locks_are_store_corrupt_naming_them(change: object, message: str) -> None:
    body = _body(_locked_alice())
    change(body)  # type: ignore[operator]
    with pytest.raises(StoreCorrupt, match=f"current state.*{message}"):
        decode_channel(_pack(body))


def test_locks_the_format_cannot_hold_are_not_written() -> None:
    locked = _locked_alice()
    assert locked.current is not None
    state = locked.current.state
    as_list = replace(state, locked=list(state.locked))
    with pytest.raises(StoreError, match="locked must be a tuple"):
        encode_channel(replace(locked, current=replace(locked.current, state=as_list)))
    # MAX_SUB_ALLOCS itself is stored (the State refuses one more).
    most = tuple(SubAlloc(ChannelID(bytes([i]) * 32), (1,)) for i in range(MAX_SUB_ALLOCS))
    full = replace(state, locked=most)
    channel = replace(locked, current=replace(locked.current, state=full))
    assert decode_channel(encode_channel(channel)) == channel


@CODEC_SETTINGS
@given(channels(), st.data())
def test_damage_is_store_corrupt_or_a_valid_channel(channel: Channel, data: st.DataObject) -> None:
    encoded = bytearray(encode_channel(channel))
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(StoreCorrupt):
        decode_channel(bytes(encoded[:cut]))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(encoded) - 1))
        encoded[at] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_channel(bytes(encoded))
    except StoreCorrupt:
        return
    # A flip that still parses (in a signature, say) gives a channel the codec fully accepts.
    assert decode_channel(encode_channel(decoded)) == decoded


def _body(channel: Channel) -> list[object]:
    return list(msgpack.unpackb(encode_channel(channel)[1:], raw=False, use_list=True))


def _pack(body: object) -> bytes:
    return b"\x01" + msgpack.packb(body, use_bin_type=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.__setitem__(3, 8), "unknown phase code 8"),
        (lambda b: b.__setitem__(2, 2), "index must be 0 or 1"),
        (lambda b: b.__setitem__(2, True), "index must be 0 or 1"),
        (lambda b: b.__setitem__(7, 1), "confirm_updates must be a bool"),
        (lambda b: b.__setitem__(0, b"\x01" * 31), "channel ID must be 32 bytes"),
        (lambda b: b[1].__setitem__(1, b"\x00\x01"), "nonce must be a minimal big-endian"),
        (lambda b: b[1].__setitem__(3, b[1][2]), "participants must differ"),
        (lambda b: b[4][0].__setitem__(1, -1), "current state version must be an int"),
        (lambda b: b[4][0][3][0].__setitem__(0, b"\x01" * 33), "current state balance must be"),
        (lambda b: b[4].__setitem__(1, b"\x00" * 64), "current signature must be 65 bytes"),
        (lambda b: b.append(None), "reserved must be an int"),
        (lambda b: b.extend([1, True, None, None, None]),
         "channel record must be an array of 10 \\(11 with"),
        (lambda b: b.__setitem__(9, -1), "signed_up_to must be an int"),
        (lambda b: b.__setitem__(5, [0, None, b"", b"", b""]), "staged state must be an array"),
    ],
)
def test_decoding_names_the_bad_field(change: object, message: str) -> None:
    alice, _ = make_pair()
    body = _body(alice)
    change(body)  # type: ignore[operator]
    with pytest.raises(StoreCorrupt, match=message):
        decode_channel(_pack(body))


def test_unknown_format_version_and_trailing_bytes_are_refused() -> None:
    alice, _ = make_pair()
    encoded = encode_channel(alice)
    with pytest.raises(StoreCorrupt, match="format version 2"):
        decode_channel(b"\x02" + encoded[1:])
    with pytest.raises(StoreCorrupt, match="not valid msgpack"):
        decode_channel(encoded + b"\x00")
    with pytest.raises(StoreCorrupt, match="empty"):
        decode_channel(b"")


def test_encoding_refuses_what_it_could_not_decode() -> None:
    alice, _ = make_pair()
    assert alice.current is not None
    with pytest.raises(StoreError, match="signature must be 65 bytes"):
        encode_channel(replace(alice, current=replace(alice.current, signatures=(b"", b""))))  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="index"):
        encode_channel(replace(alice, index=2))


def test_small_records_round_trip_and_are_strict() -> None:
    contact = {"off_chain_address": "0x" + "ab" * 20, "comm_address": "127.0.0.1:5750",
               "comm_type": "tcp"}
    assert decode_contact(encode_contact(contact)) == contact
    assert decode_cursor(encode_cursor(2**64 - 1)) == (2**64 - 1, None)
    assert decode_cursor(encode_cursor(7, b"\xab" * 32)) == (7, b"\xab" * 32)
    with pytest.raises(StoreError, match="block hash"):
        encode_cursor(7, b"\xab" * 31)
    with pytest.raises(StoreCorrupt, match="block hash"):
        decode_cursor(_pack((7, b"\xab" * 31)))
    with pytest.raises(StoreCorrupt, match="cursor record"):
        decode_cursor(_pack((7, b"\xab" * 32, 1)))
    with pytest.raises(StoreError):
        encode_cursor(-1)
    with pytest.raises(StoreCorrupt, match="block cursor"):
        decode_cursor(_pack(-1))
    with pytest.raises(StoreCorrupt, match="fields must be text"):
        decode_contact(_pack({"a": 1}))
    with pytest.raises(StoreError):
        encode_contact({"a": 1})  # type: ignore[dict-item]


def test_a_virtual_channel_keeps_its_params_and_its_parents() -> None:
    from perund.channel.types import VirtualParams
    from tests.channel.virtual_factories import make_hub

    hub = make_hub()
    for channel in (hub.v_alice, hub.v_carol):
        assert isinstance(channel.params, VirtualParams)
        assert decode_channel(encode_channel(channel)) == durable(channel)
    body = msgpack.unpackb(encode_channel(hub.v_alice)[1:])
    assert body[1][4] == [hub.la_alice.channel_id, hub.lc_carol.channel_id]
    bad = body.copy()
    bad[1] = [*body[1][:4], [hub.la_alice.channel_id, hub.la_alice.channel_id]]
    with pytest.raises(StoreCorrupt, match="parents must differ"):
        decode_channel(b"\x01" + msgpack.packb(bad, use_bin_type=True))
    bad[1] = [*body[1][:4], [hub.la_alice.channel_id]]
    with pytest.raises(StoreCorrupt, match="parents"):
        decode_channel(b"\x01" + msgpack.packb(bad, use_bin_type=True))
