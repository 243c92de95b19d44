"""The wire codec: round trips, golden vectors, and strict refusal of anything malformed."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perund.channel.memo import (
    DIRECTION_MARKS,
    MAX_PARTS,
    MAX_REFERENCE,
    UNSHOWABLE_CATEGORIES,
    PaymentPart,
)
from perund.channel.types import (
    ETH,
    MAX_ASSETS,
    MAX_SUB_ALLOCS,
    UINT64_MAX,
    UINT256_MAX,
    Address,
    ChannelID,
    Signature,
    State,
    SubAlloc,
)
from perund.errors import DecodeError, EncodeError, PeerProtocolError
from perund.wire.codec import (
    FORMAT_VERSION,
    TYPE_PING,
    TYPE_SYNC,
    TYPE_UPDATE,
    TYPE_UPDATE_ACCEPT,
    TYPE_UPDATE_REJECT,
    decode,
    encode,
)
from perund.wire.fields import MAX_PING_NONCE, MAX_REASON_LENGTH
from perund.wire.messages import (
    Accept,
    Auth,
    ChannelClosed,
    Hello,
    Message,
    Ping,
    Pong,
    Propose,
    Reject,
    Sync,
    Update,
    UpdateAccept,
    UpdateReject,
    channel_id_of,
    request_key,
    response_key,
)

# -- strategies -------------------------------------------------------------------------------

addresses = st.binary(min_size=20, max_size=20).map(Address)
ids = st.binary(min_size=32, max_size=32)
signatures = st.binary(min_size=65, max_size=65).map(Signature)
uint64 = st.integers(0, UINT64_MAX)
uint256 = st.one_of(st.integers(0, UINT256_MAX), st.sampled_from([0, 2**64, UINT256_MAX]))
reasons = st.text(max_size=MAX_REASON_LENGTH)
ping_nonces = st.binary(max_size=MAX_PING_NONCE)


@st.composite
def assets_and_balances(draw: st.DrawFn) -> tuple[tuple[Address, ...], tuple[tuple[int, int], ...]]:
    n = draw(st.integers(1, MAX_ASSETS))
    assets = tuple(draw(st.lists(addresses, min_size=n, max_size=n)))
    balances = tuple((draw(uint256), draw(uint256)) for _ in range(n))
    return assets, balances


@st.composite
def locks(draw: st.DrawFn, n_assets: int) -> tuple[SubAlloc, ...]:
    lock_ids = draw(st.lists(ids, min_size=1, max_size=MAX_SUB_ALLOCS, unique=True))
    return tuple(
        SubAlloc(
            ChannelID(lock_id),
            tuple(draw(uint256) for _ in range(n_assets)),
            draw(st.sampled_from([(0, 1), (1, 0)])),
        )
        for lock_id in lock_ids
    )


@st.composite
def states(draw: st.DrawFn) -> State:
    assets, balances = draw(assets_and_balances())
    locked = draw(st.just(()) | locks(len(assets)))
    return State(ChannelID(draw(ids)), draw(uint64), assets, balances, draw(st.booleans()), locked)


@st.composite
def proposals(draw: st.DrawFn) -> Propose:
    assets, balances = draw(assets_and_balances())
    return Propose(
        proposal_id=draw(ids),
        chain_id=draw(uint256),
        adjudicator=draw(addresses),
        challenge_duration=draw(uint64),
        nonce_share=draw(ids),
        assets=assets,
        balances=balances,
        participant=draw(addresses),
        receiver=draw(addresses),
    )


@st.composite
def memos(draw: st.DrawFn, n_assets: int) -> tuple[PaymentPart, ...]:
    part = st.builds(PaymentPart,
                     st.tuples(*[st.integers(0, UINT256_MAX)] * n_assets),
                     st.booleans(), st.none() | st.text(
                         st.characters(blacklist_categories=tuple(UNSHOWABLE_CATEGORIES),
                                       blacklist_characters="".join(DIRECTION_MARKS)),
                         max_size=MAX_REFERENCE))
    return tuple(draw(st.lists(part, min_size=1, max_size=4)))


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, st.integers(0, 2**32 - 1), addresses, ids),
    st.builds(Auth, signatures),
    proposals(),
    st.builds(Accept, ids, ids, addresses, addresses, signatures),
    st.builds(Reject, ids, reasons),
    st.builds(Update, states(), signatures),
    st.builds(lambda state, sig, data: Update(state, sig, data.draw(memos(len(state.assets)))),
              states(), signatures, st.data()),
    st.builds(UpdateAccept, ids.map(ChannelID), uint64, signatures),
    st.builds(UpdateReject, ids.map(ChannelID), uint64, reasons),
    st.builds(Sync, states(), st.tuples(signatures, signatures)),
    st.builds(lambda state, sigs, data: Sync(state, sigs, data.draw(
        st.integers(state.version + 1, UINT64_MAX) if state.version < UINT64_MAX else st.just(0))),
              states(), st.tuples(signatures, signatures), st.data()),
    st.builds(ChannelClosed, ids.map(ChannelID), reasons),
    st.builds(Ping, ping_nonces),
    st.builds(Pong, ping_nonces),
)


# -- round trips ------------------------------------------------------------------------------


@given(messages)
def test_round_trip(msg: Message) -> None:
    payload = encode(msg)
    assert decode(payload) == msg
    # One canonical encoding: re-encoding the decoded message gives the same bytes.
    assert encode(decode(payload)) == payload


@given(messages)
def test_round_trip_from_bytearray(msg: Message) -> None:
    assert decode(bytearray(encode(msg))) == msg


def test_amounts_above_2_64_survive() -> None:
    state = State(ChannelID(b"\x01" * 32), 1, (ETH,), ((UINT256_MAX, 2**64),), False)
    decoded = decode(encode(Update(state, Signature(b"\x02" * 65))))
    assert isinstance(decoded, Update)
    assert decoded.state.balances == ((UINT256_MAX, 2**64),)


# -- golden vectors ---------------------------------------------------------------------------
# Fixed encodings: a codec change that alters any of these breaks compatibility with deployed
# nodes and must come with a new FORMAT_VERSION.

A = Address(bytes(range(1, 21)))
B = Address(bytes(range(21, 41)))
TOKEN = Address(b"\xee" * 20)
ID = bytes(range(32))
ID2 = bytes(range(32, 64))
SIG = Signature(bytes(range(65)))
SIG2 = Signature(bytes(range(100, 165)))
STATE = State(ChannelID(ID), 7, (ETH, TOKEN), ((10**18, UINT256_MAX), (0, 255)), False)
# A ledger state locking funds for two virtual channels: Update and Sync carry the locks as one
# trailing field, so the vectors of states without locks above stay as they were.
LOCKED = State(
    ChannelID(ID),
    8,
    (ETH, TOKEN),
    ((10**18, 5), (0, 1)),
    False,
    (
        SubAlloc(ChannelID(ID2), (2 * 10**18, 0), (0, 1)),
        SubAlloc(ChannelID(b"\x09" * 32), (1, 256), (1, 0)),
    ),
)

GOLDEN: list[tuple[Message, str]] = [
    (
        Hello(1, A, ID2),
        "01019301c4140102030405060708090a0b0c0d0e0f1011121314c420202122232425262728292a2b2c2d2e2f"
        "303132333435363738393a3b3c3d3e3f",
    ),
    (
        Auth(SIG),
        "010291c441000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223242526"
        "2728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40",
    ),
    (
        Propose(ID, 1337, B, 3600, ID2, (ETH, TOKEN), ((5 * 10**18, 0), (1, 2**64)), A, B),
        "010399c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc4020539c41415"
        "161718191a1b1c1d1e1f202122232425262728cd0e10c420202122232425262728292a2b2c2d2e2f30313233"
        "3435363738393a3b3c3d3e3f92c4140000000000000000000000000000000000000000c414eeeeeeeeeeeeee"
        "eeeeeeeeeeeeeeeeeeeeeeeeee9292c4084563918244f40000c40092c40101c409010000000000000000c414"
        "0102030405060708090a0b0c0d0e0f1011121314c41415161718191a1b1c1d1e1f202122232425262728",
    ),
    (
        Accept(ID, ID2, B, A, SIG),
        "010495c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc4202021222324"
        "25262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3fc41415161718191a1b1c1d1e1f20212223"
        "2425262728c4140102030405060708090a0b0c0d0e0f1011121314c441000102030405060708090a0b0c0d0e"
        "0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a"
        "3b3c3d3e3f40",
    ),
    (
        Reject(ID, "not now"),
        "010592c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa76e6f74206e6f"
        "77",
    ),
    (
        Update(STATE, SIG),
        "010696c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0792c414000000"
        "0000000000000000000000000000000000c414eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee9292c4080d"
        "e0b6b3a7640000c420ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff92c400"
        "c401ffc2c441000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425"
        "262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40",
    ),
    (
        UpdateAccept(ChannelID(ID), 7, SIG2),
        "010793c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f07c44164656667"
        "68696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f90919293"
        "9495969798999a9b9c9d9e9fa0a1a2a3a4",
    ),
    (
        UpdateReject(ChannelID(ID), 7, "insufficient funds ü"),
        "010893c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f07b5696e737566"
        "66696369656e742066756e647320c3bc",
    ),
    (
        Sync(State(ChannelID(ID), UINT64_MAX, (ETH,), ((0, 1),), True), (SIG, SIG2)),
        "010997c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fcfffffffffffff"
        "ffff91c41400000000000000000000000000000000000000009192c400c40101c3c441000102030405060708"
        "090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334"
        "35363738393a3b3c3d3e3f40c4416465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f8081"
        "82838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4",
    ),
    (
        Update(LOCKED, SIG),
        "010697c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0892c414000000"
        "0000000000000000000000000000000000c414eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee9292c4080d"
        "e0b6b3a7640000c4010592c400c40101c2c441000102030405060708090a0b0c0d0e0f101112131415161718"
        "191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f409293c420"
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f92c4081bc16d674ec80000c4"
        "0092000193c420090909090909090909090909090909090909090909090909090909090909090992c40101c4"
        "020100920100",
    ),
    (
        Sync(LOCKED, (SIG, SIG2)),
        "010998c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0892c414000000"
        "0000000000000000000000000000000000c414eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee9292c4080d"
        "e0b6b3a7640000c4010592c400c40101c2c441000102030405060708090a0b0c0d0e0f101112131415161718"
        "191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40c4416465"
        "666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f9091"
        "92939495969798999a9b9c9d9e9fa0a1a2a3a49293c420202122232425262728292a2b2c2d2e2f3031323334"
        "35363738393a3b3c3d3e3f92c4081bc16d674ec80000c40092000193c4200909090909090909090909090909"
        "09090909090909090909090909090909090992c40101c4020100920100",
    ),
    (
        ChannelClosed(ChannelID(ID), "closed"),
        "011292c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa6636c6f736564",
    ),
    (Ping(b"\x01\x02\x03"), "010a91c403010203"),
    (Pong(b""), "010b91c400"),
]


@pytest.mark.parametrize(("msg", "golden"), GOLDEN, ids=[type(m).__name__ for m, _ in GOLDEN])
def test_golden_vector(msg: Message, golden: str) -> None:
    assert encode(msg).hex() == golden
    assert decode(bytes.fromhex(golden)) == msg


def test_golden_vectors_cover_every_message_type() -> None:
    assert {type(m) for m, _ in GOLDEN} == {
        Hello,
        Auth,
        Propose,
        Accept,
        Reject,
        Update,
        UpdateAccept,
        UpdateReject,
        Sync,
        ChannelClosed,
        Ping,
        Pong,
    }


def test_layout_by_hand() -> None:
    # format 1, type 10 (Ping), fixarray(1), bin8 of length 2.
    assert encode(Ping(b"\xab\xcd")) == bytes([1, 10, 0x91, 0xC4, 2, 0xAB, 0xCD])
    # An amount is a minimal big-endian byte string: 256 = 0x0100, zero = empty.
    update = Update(State(ChannelID(ID), 1, (ETH,), ((256, 0),), False), SIG)
    body = msgpack.unpackb(encode(update)[2:])
    assert body[3] == [[b"\x01\x00", b""]]


# -- hostile decodes --------------------------------------------------------------------------


def frame(type_code: int, body: object, version: int = FORMAT_VERSION) -> bytes:
    """A payload with an arbitrary msgpack body, for building malformed messages."""
    body_bytes: bytes = msgpack.packb(body, use_bin_type=True)
    return bytes((version, type_code)) + body_bytes


def update_body(**overrides: object) -> list[object]:
    fields: dict[str, object] = {
        "channel": ID,
        "version": 5,
        "assets": [ETH],
        "balances": [[b"\x01", b"\x02"]],
        "final": False,
        "sig": SIG,
    }
    fields.update(overrides)
    return list(fields.values())


LOCK = [ID2, [b"\x01"], [0, 1]]


def locked_sync_body(*locks: object) -> list[object]:
    """A Sync body whose trailing field is `locks` (one asset)."""
    return [*update_body(), SIG2, list(locks)]


def test_valid_handmade_locked_messages_decode() -> None:
    # The baselines the malformed locks below depart from.
    lock = SubAlloc(ChannelID(ID2), (1,), (0, 1))
    state = State(ChannelID(ID), 5, (ETH,), ((1, 2),), False, (lock,))
    assert decode(frame(TYPE_UPDATE, [*update_body(), [LOCK]])) == Update(state, SIG)
    assert decode(frame(TYPE_SYNC, locked_sync_body(LOCK))) == Sync(state, (SIG, SIG2))


def test_memos_ride_after_the_locks() -> None:
    memo = (PaymentPart((3,), False, "inv-7"), PaymentPart((1,), False, None))
    wire_memo = {"m": [[[b"\x03"], False, "inv-7"], [[b"\x01"], False, None]]}
    plain = State(ChannelID(ID), 5, (ETH,), ((1, 2),), False)
    assert decode(frame(TYPE_UPDATE, [*update_body(), wire_memo])) == Update(plain, SIG, memo)
    locked = State(ChannelID(ID), 5, (ETH,), ((1, 2),), False,
                   (SubAlloc(ChannelID(ID2), (1,), (0, 1)),))
    both = decode(frame(TYPE_UPDATE, [*update_body(), [LOCK], wire_memo]))
    assert both == Update(locked, SIG, memo)
    assert encode(both) == frame(TYPE_UPDATE, [*update_body(), [LOCK], wire_memo])
    # An update without a memo keeps its bytes (the golden vectors above pin them).
    assert encode(Update(plain, SIG)) == frame(TYPE_UPDATE, update_body())


def test_a_syncs_awaiting_rides_after_the_locks() -> None:
    plain = State(ChannelID(ID), 5, (ETH,), ((1, 2),), False)
    body = [*update_body(), SIG2]
    assert decode(frame(TYPE_SYNC, [*body, 6])) == Sync(plain, (SIG, SIG2), 6)
    locked = State(ChannelID(ID), 5, (ETH,), ((1, 2),), False,
                   (SubAlloc(ChannelID(ID2), (1,), (0, 1)),))
    both = decode(frame(TYPE_SYNC, [*body, [LOCK], 9]))
    assert both == Sync(locked, (SIG, SIG2), 9)
    assert encode(both) == frame(TYPE_SYNC, [*body, [LOCK], 9])
    # A Sync awaiting nothing keeps its bytes (the golden vectors above pin them).
    assert encode(Sync(plain, (SIG, SIG2), 0)) == frame(TYPE_SYNC, body)


@pytest.mark.parametrize("trailing", [
    [0],  # "nothing awaited" has one encoding: the field left out
    [5],  # at or below the state's own version
    [-1],
    [True],
    [6, [LOCK]],  # the locks come first
    [[LOCK], 6, 7],
    [6, 7],
], ids=repr)
def test_a_malformed_awaiting_is_refused(trailing: list[object]) -> None:
    with pytest.raises(DecodeError):
        decode(frame(TYPE_SYNC, [*update_body(), SIG2, *trailing]))


@pytest.mark.parametrize("awaiting", [5, 4, -1, 2**64, True, None])
def test_an_awaiting_at_or_below_the_state_is_not_encoded(awaiting: object) -> None:
    state = State(ChannelID(ID), 5, (ETH,), ((1, 2),), False)
    with pytest.raises(EncodeError):
        encode(Sync(state, (SIG, SIG2), awaiting))  # type: ignore[arg-type]


def test_valid_handmade_update_decodes() -> None:
    # The baseline the malformed variants below depart from.
    msg = decode(frame(TYPE_UPDATE, update_body()))
    assert msg == Update(State(ChannelID(ID), 5, (ETH,), ((1, 2),), False), SIG)


HOSTILE: dict[str, bytes] = {
    "empty": b"",
    "header only": bytes((FORMAT_VERSION, TYPE_PING)),
    "unknown format version": frame(TYPE_PING, [b""], version=2),
    "format version zero": frame(TYPE_PING, [b""], version=0),
    "unknown type": frame(99, [b""]),
    "type zero": frame(0, [b""]),
    "truncated body": frame(TYPE_UPDATE, update_body())[:-3],
    "trailing data": frame(TYPE_PING, [b""]) + b"\x00",
    "two bodies": frame(TYPE_PING, [b""]) + msgpack.packb([b""]),
    "body is a map": frame(TYPE_PING, {"nonce": b""}),
    "body is a scalar": frame(TYPE_PING, b""),
    "too few fields": frame(TYPE_UPDATE, update_body()[:-1]),
    "too many fields": frame(TYPE_UPDATE, [*update_body(), 1]),
    "memo with another key": frame(TYPE_UPDATE, [*update_body(), {"x": []}]),
    "memo without parts": frame(TYPE_UPDATE, [*update_body(), {"m": []}]),
    "memo part short": frame(TYPE_UPDATE, [*update_body(), {"m": [[[b"\x01"], False]]}]),
    "memo amounts per asset": frame(TYPE_UPDATE, [*update_body(),
                                                  {"m": [[[b"\x01", b"\x01"], False, None]]}]),
    "memo amount not minimal": frame(TYPE_UPDATE, [*update_body(),
                                                   {"m": [[[b"\x00\x01"], False, None]]}]),
    "memo request not a bool": frame(TYPE_UPDATE, [*update_body(),
                                                   {"m": [[[b"\x01"], 1, None]]}]),
    "memo reference too long": frame(TYPE_UPDATE, [*update_body(), {
        "m": [[[b"\x01"], False, "x" * (MAX_REFERENCE + 1)]]}]),
    "memo reference with a terminal escape": frame(TYPE_UPDATE, [*update_body(), {
        "m": [[[b"\x01"], False, "INV\x1b[2J\r\nfake line"]]}]),
    "memo reference with a direction override": frame(TYPE_UPDATE, [*update_body(), {
        "m": [[[b"\x01"], False, "inv\u202egnp.exe"]]}]),
    "memo reference not text": frame(TYPE_UPDATE, [*update_body(),
                                                   {"m": [[[b"\x01"], False, b"x"]]}]),
    "memo parts too many": frame(TYPE_UPDATE, [*update_body(), {
        "m": [[[b"\x01"], False, None]] * (MAX_PARTS + 1)}]),
    "two memos": frame(TYPE_UPDATE, [*update_body(), {"m": [[[b"\x01"], False, None]]},
                                     {"m": [[[b"\x01"], False, None]]}]),
    "locks after the memo": frame(TYPE_UPDATE, [*update_body(),
                                                {"m": [[[b"\x01"], False, None]]}, [LOCK]]),
    "channel id 31 bytes": frame(TYPE_UPDATE, update_body(channel=ID[:31])),
    "channel id 33 bytes": frame(TYPE_UPDATE, update_body(channel=ID + b"\x00")),
    "channel id as str": frame(TYPE_UPDATE, update_body(channel="x" * 32)),
    "version negative": frame(TYPE_UPDATE, update_body(version=-1)),
    "version as bool": frame(TYPE_UPDATE, update_body(version=True)),
    "version as float": frame(TYPE_UPDATE, update_body(version=5.0)),
    "version as bytes": frame(TYPE_UPDATE, update_body(version=b"\x05")),
    "no assets": frame(TYPE_UPDATE, update_body(assets=[], balances=[])),
    "too many assets": frame(
        TYPE_UPDATE,
        update_body(assets=[ETH] * (MAX_ASSETS + 1), balances=[[b"", b""]] * (MAX_ASSETS + 1)),
    ),
    "asset 19 bytes": frame(TYPE_UPDATE, update_body(assets=[ETH[:19]])),
    "assets not a list": frame(TYPE_UPDATE, update_body(assets=ETH)),
    "balances rows != assets": frame(TYPE_UPDATE, update_body(balances=[[b"", b""]] * 2)),
    "balance row of three": frame(TYPE_UPDATE, update_body(balances=[[b"", b"", b""]])),
    "balance as msgpack int": frame(TYPE_UPDATE, update_body(balances=[[1, 2]])),
    "balance with leading zero": frame(TYPE_UPDATE, update_body(balances=[[b"\x00\x01", b""]])),
    "balance of 33 bytes": frame(TYPE_UPDATE, update_body(balances=[[b"\x01" * 33, b""]])),
    "is_final as int": frame(TYPE_UPDATE, update_body(final=0)),
    "signature 64 bytes": frame(TYPE_UPDATE, update_body(sig=SIG[:64])),
    "signature 66 bytes": frame(TYPE_UPDATE, update_body(sig=SIG + b"\x00")),
    "ext type field": frame(TYPE_UPDATE, update_body(sig=msgpack.ExtType(1, SIG))),
    "version as negative int64": bytes((FORMAT_VERSION, TYPE_UPDATE_ACCEPT))
    + b"\x93\xc4\x20"
    + ID
    + b"\xd3\xff\xff\xff\xff\xff\xff\xff\xff"  # int64 -1
    + b"\xc4\x41"
    + SIG,
    "over-long reason": frame(TYPE_UPDATE_REJECT, [ID, 1, "x" * (MAX_REASON_LENGTH + 1)]),
    "reason as bytes": frame(TYPE_UPDATE_REJECT, [ID, 1, b"no"]),
    "reason not UTF-8": bytes((FORMAT_VERSION, TYPE_UPDATE_REJECT))
    + b"\x93\xc4\x20"
    + ID
    + b"\x01\xa2\xff\xfe",
    "locks empty (a second encoding of none)": frame(TYPE_UPDATE, [*update_body(), []]),
    "locks nil": frame(TYPE_UPDATE, [*update_body(), None]),
    "locks not a list": frame(TYPE_UPDATE, [*update_body(), LOCK]),
    "too many locks": frame(
        TYPE_SYNC,
        locked_sync_body(*([bytes([i]) * 32, [b""], [0, 1]] for i in range(MAX_SUB_ALLOCS + 1))),
    ),
    "lock of two fields": frame(TYPE_SYNC, locked_sync_body([ID2, [b"\x01"]])),
    "lock of four fields": frame(TYPE_SYNC, locked_sync_body([*LOCK, 0])),
    "lock as a map": frame(TYPE_SYNC, locked_sync_body({"id": ID2})),
    "locked channel id 31 bytes": frame(TYPE_SYNC, locked_sync_body([ID2[:31], [b"\x01"], [0, 1]])),
    "locked amounts fewer than assets": frame(TYPE_SYNC, locked_sync_body([ID2, [], [0, 1]])),
    "locked amounts more than assets": frame(
        TYPE_SYNC, locked_sync_body([ID2, [b"", b""], [0, 1]])
    ),
    "locked amount as int": frame(TYPE_SYNC, locked_sync_body([ID2, [1], [0, 1]])),
    "locked amount leading zero": frame(TYPE_SYNC, locked_sync_body([ID2, [b"\x00\x01"], [0, 1]])),
    "locked amount 33 bytes": frame(TYPE_SYNC, locked_sync_body([ID2, [b"\x01" * 33], [0, 1]])),
    "index map [1, 1]": frame(TYPE_SYNC, locked_sync_body([ID2, [b""], [1, 1]])),
    "index map [0]": frame(TYPE_SYNC, locked_sync_body([ID2, [b""], [0]])),
    "index map [0, 1, 0]": frame(TYPE_SYNC, locked_sync_body([ID2, [b""], [0, 1, 0]])),
    "index map of bools": frame(TYPE_SYNC, locked_sync_body([ID2, [b""], [False, True]])),
    "index map of floats": frame(TYPE_SYNC, locked_sync_body([ID2, [b""], [0.0, 1.0]])),
    "index map as bytes": frame(TYPE_SYNC, locked_sync_body([ID2, [b""], b"\x00\x01"])),
    "one virtual channel locked twice": frame(TYPE_SYNC, locked_sync_body(LOCK, LOCK)),
    "sync with nine fields": frame(TYPE_SYNC, [*locked_sync_body(LOCK), 1]),
    "ping nonce too long": frame(TYPE_PING, [b"\x00" * (MAX_PING_NONCE + 1)]),
    "deep nesting": frame(TYPE_PING, [[[[[[[[[[b""]]]]]]]]]]),
    "nesting beyond msgpack's stack": bytes((FORMAT_VERSION, TYPE_PING)) + b"\x91" * 5000,
}


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_payload_is_refused(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(payload)


def test_decode_error_is_a_peer_protocol_error() -> None:
    assert issubclass(DecodeError, PeerProtocolError)


@given(st.binary(max_size=300))
def test_random_bytes_decode_or_refuse(payload: bytes) -> None:
    try:
        msg = decode(payload)
    except DecodeError:
        return
    assert decode(encode(msg)) == msg  # whatever decodes is a valid message


@given(messages, st.data())
def test_corrupted_encodings_decode_or_refuse(msg: Message, data: st.DataObject) -> None:
    payload = bytearray(encode(msg))
    index = data.draw(st.integers(0, len(payload) - 1))
    payload[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    try:
        decoded = decode(bytes(payload[:cut]))
    except DecodeError:
        return
    assert decode(encode(decoded)) == decoded


# -- encode refuses malformed messages --------------------------------------------------------

MALFORMED: dict[str, object] = {
    "short address": Hello(1, Address(b"\x01" * 19), ID),
    "negative protocol version": Hello(-1, A, ID),
    "short auth signature": Auth(Signature(b"\x00" * 64)),
    "signature as bytearray": Auth(bytearray(SIG)),  # type: ignore[arg-type]
    "negative chain id": Propose(ID, -1, B, 1, ID2, (ETH,), ((1, 1),), A, B),
    "balance above uint256": Propose(ID, 1, B, 1, ID2, (ETH,), ((UINT256_MAX + 1, 1),), A, B),
    "balances shorter than assets": Propose(ID, 1, B, 1, ID2, (ETH, TOKEN), ((1, 1),), A, B),
    "assets as list": Propose(ID, 1, B, 1, ID2, [ETH], ((1, 1),), A, B),  # type: ignore[arg-type]
    "too many assets": Propose(
        ID, 1, B, 1, ID2, (ETH,) * (MAX_ASSETS + 1), ((1, 1),) * (MAX_ASSETS + 1), A, B
    ),
    "challenge duration above uint64": Propose(ID, 1, B, 2**64, ID2, (ETH,), ((1, 1),), A, B),
    "long reason": Reject(ID, "x" * (MAX_REASON_LENGTH + 1)),
    "version as bool": UpdateAccept(ChannelID(ID), True, SIG),
    "one sync signature": Sync(STATE, (SIG,)),  # type: ignore[arg-type]
    "locks as list": Update(
        State(ChannelID(ID), 1, (ETH,), ((1, 1),), False, [SubAlloc(ChannelID(ID2), (1,))]),  # type: ignore[arg-type]
        SIG,
    ),
    "long ping nonce": Ping(b"\x00" * (MAX_PING_NONCE + 1)),
    "memo as list": Update(STATE, SIG, [PaymentPart((1, 1))]),  # type: ignore[arg-type]
    "memo amounts per asset": Update(STATE, SIG, (PaymentPart((1,)),)),
    "memo reference too long": Update(STATE, SIG, (PaymentPart((1, 1), False,
                                                               "x" * (MAX_REFERENCE + 1)),)),
    "memo negative amount": Update(STATE, SIG, (PaymentPart((-1, 1)),)),
    "not a message": "hello",
}


@pytest.mark.parametrize("msg", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_message_is_not_encoded(msg: Message) -> None:
    with pytest.raises(EncodeError):
        encode(msg)


# -- correlation and channel ids --------------------------------------------------------------


def test_requests_and_responses_share_keys() -> None:
    update = Update(STATE, SIG)
    assert request_key(update) == response_key(UpdateAccept(ChannelID(ID), 7, SIG2))
    assert request_key(update) == response_key(UpdateReject(ChannelID(ID), 7, "no"))
    assert request_key(update) != response_key(UpdateAccept(ChannelID(ID), 8, SIG2))
    assert request_key(update) != response_key(UpdateAccept(ChannelID(ID2), 7, SIG2))
    propose = GOLDEN[2][0]
    assert request_key(propose) == response_key(Accept(ID, ID2, B, A, SIG))
    assert request_key(propose) == response_key(Reject(ID, "no"))
    assert request_key(Ping(b"n")) == response_key(Pong(b"n"))
    assert request_key(Ping(b"n")) != response_key(Pong(b"m"))
    # A proposal ID that happens to equal a channel ID never matches an update.
    assert request_key(propose) != request_key(Update(STATE, SIG))


def test_neither_request_nor_response() -> None:
    msg: Message
    for msg in (Hello(1, A, ID), Auth(SIG), Sync(STATE, (SIG, SIG2))):
        assert request_key(msg) is None
        assert response_key(msg) is None
    for msg in (Accept(ID, ID2, B, A, SIG), UpdateAccept(ChannelID(ID), 1, SIG), Pong(b"")):
        assert request_key(msg) is None
    for msg in (Update(STATE, SIG), Propose(ID, 1, B, 1, ID2, (ETH,), ((1, 1),), A, B)):
        assert response_key(msg) is None


def test_channel_id_of() -> None:
    assert channel_id_of(Update(STATE, SIG)) == ID
    assert channel_id_of(Sync(STATE, (SIG, SIG2))) == ID
    assert channel_id_of(UpdateAccept(ChannelID(ID2), 1, SIG)) == ID2
    assert channel_id_of(UpdateReject(ChannelID(ID2), 1, "")) == ID2
    assert channel_id_of(ChannelClosed(ChannelID(ID2), "")) == ID2
    assert Update(STATE, SIG).channel_id == ID
    for msg in (Hello(1, A, ID), Propose(ID, 1, B, 1, ID2, (ETH,), ((1, 1),), A, B), Ping(b"")):
        assert channel_id_of(msg) is None
