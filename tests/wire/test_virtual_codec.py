"""The virtual-channel messages on the wire: round trips, golden vectors, hostile input."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perund.channel.types import (
    ETH,
    UINT64_MAX,
    ChannelID,
    Signature,
    State,
    SubAlloc,
    VirtualParams,
    VirtualProof,
)
from perund.errors import DecodeError, EncodeError
from perund.wire.codec import FORMAT_VERSION, decode, encode
from perund.wire.messages import (
    FeeQuery,
    FeeQuote,
    Message,
    Reject,
    UpdateAccept,
    UpdateReject,
    VirtualAccept,
    VirtualFold,
    VirtualLock,
    VirtualPropose,
    channel_id_of,
    request_key,
    response_key,
)
from perund.wire.virtual_codec import (
    TYPE_FEE_QUERY,
    TYPE_FEE_QUOTE,
    TYPE_VIRTUAL_ACCEPT,
    TYPE_VIRTUAL_FOLD,
    TYPE_VIRTUAL_LOCK,
    TYPE_VIRTUAL_PROPOSE,
)

from .test_codec import (
    ID,
    ID2,
    SIG,
    SIG2,
    TOKEN,
    A,
    B,
    addresses,
    assets_and_balances,
    ids,
    signatures,
    states,
    uint64,
    uint256,
)

ID3 = bytes(range(64, 96))


@st.composite
def virtual_params(draw: st.DrawFn) -> VirtualParams:
    participants = draw(st.lists(addresses, min_size=2, max_size=2, unique=True))
    parents = draw(st.lists(ids.map(ChannelID), min_size=2, max_size=2, unique=True))
    return VirtualParams(draw(st.integers(1, UINT64_MAX)), draw(uint256),
                         (participants[0], participants[1]), (parents[0], parents[1]))


@st.composite
def proofs(draw: st.DrawFn) -> VirtualProof:
    assets, balances = draw(assets_and_balances())
    state = State(ChannelID(draw(ids)), draw(uint64), assets, balances, draw(st.booleans()))
    return VirtualProof(draw(virtual_params()), state, (draw(signatures), draw(signatures)))


@st.composite
def proposals(draw: st.DrawFn) -> VirtualPropose:
    assets, balances = draw(assets_and_balances())
    return VirtualPropose(draw(ids), draw(uint256), draw(addresses), draw(uint64), draw(ids),
                          assets, balances, draw(addresses), draw(addresses),
                          ChannelID(draw(ids)))


@st.composite
def lock_proofs(draw: st.DrawFn) -> VirtualProof:
    """A lock's proof, with a fee (not all zero) or without one."""
    proof = draw(proofs())
    if not draw(st.booleans()):
        return proof
    fee = draw(st.lists(uint256, min_size=len(proof.state.assets),
                        max_size=len(proof.state.assets)).filter(any))
    return VirtualProof(proof.params, proof.state, proof.signatures, tuple(fee))


@st.composite
def fee_queries(draw: st.DrawFn) -> FeeQuery:
    assets, balances = draw(assets_and_balances())
    return FeeQuery(draw(ids), assets, tuple(row[0] for row in balances))


virtual_messages: st.SearchStrategy[Message] = st.one_of(
    proposals(),
    st.builds(VirtualAccept, ids, ids, addresses, ids.map(ChannelID), signatures),
    st.builds(VirtualLock, states(), signatures, lock_proofs()),
    st.builds(VirtualFold, states(), signatures, proofs()),
    fee_queries(),
    st.builds(FeeQuote, ids, st.lists(uint256, min_size=1, max_size=16).map(tuple)),
)


@given(virtual_messages)
def test_round_trip(msg: Message) -> None:
    payload = encode(msg)
    assert decode(payload) == msg
    assert encode(decode(payload)) == payload


@given(virtual_messages, st.data())
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


# -- golden vectors ---------------------------------------------------------------------------

VP = VirtualParams(7200, 2**200 + 5, (A, B), (ChannelID(ID), ChannelID(ID2)))
V0 = State(ChannelID(ID3), 0, (ETH,), ((3 * 10**18, 2 * 10**18),), False)
VF = State(ChannelID(ID3), 9, (ETH,), ((10**18, 4 * 10**18),), True)
LEDGER_LOCKED = State(ChannelID(ID), 4, (ETH, TOKEN), ((10**18, 2), (0, 7)), False,
                      (SubAlloc(ChannelID(ID3), (5 * 10**18, 0), (0, 1)),))
LEDGER_FOLDED = State(ChannelID(ID), 6, (ETH, TOKEN), ((0, 6 * 10**18 + 2), (0, 7)), False)

GOLDEN: list[tuple[Message, str]] = [
    (
        VirtualPropose(ID, 1337, B, 3600, ID2, (ETH,), ((3 * 10**18, 0),), A, B,
                       ChannelID(ID3)),
        "010c9ac420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc4020539c41415"
        "161718191a1b1c1d1e1f202122232425262728cd0e10c420202122232425262728292a2b2c2d2e2f30313233"
        "3435363738393a3b3c3d3e3f91c414000000000000000000000000000000000000000091"
        "92c40829a2241af62c0000c400c4140102030405060708090a0b0c0d0e0f1011121314c41415161718191a1b"
        "1c1d1e1f202122232425262728c420404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c"
        "5d5e5f",
    ),
    (
        VirtualAccept(ID, ID2, B, ChannelID(ID3), SIG),
        "010d95c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc4202021222324"
        "25262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3fc41415161718191a1b1c1d1e1f20212223"
        "2425262728c420404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5fc441000102"
        "030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e"
        "2f303132333435363738393a3b3c3d3e3f40",
    ),
    (VirtualLock(LEDGER_LOCKED, SIG, VirtualProof(VP, V0, (SIG, SIG2))),
        "010e9597c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0492c4140000"
        "000000000000000000000000000000000000c414eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee9292c408"
        "0de0b6b3a7640000c4010292c400c40107c2c441000102030405060708090a0b0c0d0e0f1011121314151617"
        "18191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f409193c4"
        "20404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f92c4084563918244f40000"
        "c40092000196cd1c20c41a0100000000000000000000000000000000000000000000000005c4140102030405"
        "060708090a0b0c0d0e0f1011121314c41415161718191a1b1c1d1e1f202122232425262728c4200001020304"
        "05060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc420202122232425262728292a2b2c2d2e"
        "2f303132333435363738393a3b3c3d3e3f95c420404142434445464748494a4b4c4d4e4f5051525354555657"
        "58595a5b5c5d5e5f0091c41400000000000000000000000000000000000000009192c40829a2241af62c0000"
        "c4081bc16d674ec80000c2c441000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e"
        "1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40c4416465666768696a6b"
        "6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f9091929394959697"
        "98999a9b9c9d9e9fa0a1a2a3a4",
    ),
    # The same lock paying a fee of 0.001 ETH: one trailing field, the bytes before it equal.
    (VirtualLock(LEDGER_LOCKED, SIG, VirtualProof(VP, V0, (SIG, SIG2), (10**15,))),
        "010e9697c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0492c414000000"
        "0000000000000000000000000000000000c414eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee9292c4080de0"
        "b6b3a7640000c4010292c400c40107c2c441000102030405060708090a0b0c0d0e0f101112131415161718191a"
        "1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f409193c420404142"
        "434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f92c4084563918244f40000c400920001"
        "96cd1c20c41a0100000000000000000000000000000000000000000000000005c4140102030405060708090a0b"
        "0c0d0e0f1011121314c41415161718191a1b1c1d1e1f202122232425262728c420000102030405060708090a0b"
        "0c0d0e0f101112131415161718191a1b1c1d1e1fc420202122232425262728292a2b2c2d2e2f30313233343536"
        "3738393a3b3c3d3e3f95c420404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f00"
        "91c41400000000000000000000000000000000000000009192c40829a2241af62c0000c4081bc16d674ec80000"
        "c2c441000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223242526272829"
        "2a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40c4416465666768696a6b6c6d6e6f7071727374757677"
        "78797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4"
        "91c407038d7ea4c68000",
    ),
    (VirtualFold(LEDGER_FOLDED, SIG2, VirtualProof(VP, VF, (SIG2, SIG))),
        "010f9596c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0692c4140000"
        "000000000000000000000000000000000000c414eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee9292c400"
        "c40853444835ec58000292c400c40107c2c4416465666768696a6b6c6d6e6f707172737475767778797a7b7c"
        "7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a496cd1c20"
        "c41a0100000000000000000000000000000000000000000000000005c4140102030405060708090a0b0c0d0e"
        "0f1011121314c41415161718191a1b1c1d1e1f202122232425262728c420000102030405060708090a0b0c0d"
        "0e0f101112131415161718191a1b1c1d1e1fc420202122232425262728292a2b2c2d2e2f3031323334353637"
        "38393a3b3c3d3e3f95c420404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f09"
        "91c41400000000000000000000000000000000000000009192c4080de0b6b3a7640000c4083782dace9d9000"
        "00c3c4416465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b"
        "8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4c441000102030405060708090a0b0c0d0e0f10"
        "1112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c"
        "3d3e3f40",
    ),
    (FeeQuery(ID, (ETH, TOKEN), (5 * 10**18, 7)),
        "011093c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f92c4140000000000"
        "000000000000000000000000000000c414eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee92c4084563918244"
        "f40000c40107",
    ),
    (FeeQuote(ID, (10**15, 0)),
        "011192c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f92c407038d7ea4c6"
        "8000c400",
    ),
]


@pytest.mark.parametrize(("msg", "golden"), GOLDEN, ids=[type(m).__name__ for m, _ in GOLDEN])
def test_golden_vector(msg: Message, golden: str) -> None:
    assert encode(msg).hex() == golden
    assert decode(bytes.fromhex(golden)) == msg


def test_golden_vectors_cover_every_virtual_message_type() -> None:
    assert {type(m) for m, _ in GOLDEN} == {VirtualPropose, VirtualAccept, VirtualLock,
                                            VirtualFold, FeeQuery, FeeQuote}


# -- hostile decodes --------------------------------------------------------------------------


def frame(type_code: int, body: object) -> bytes:
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return bytes((FORMAT_VERSION, type_code)) + packed


def params_body(**overrides: object) -> list[object]:
    fields: dict[str, object] = {"duration": 7200, "nonce": b"\x05", "p0": A, "p1": B,
                                 "l0": ID, "l1": ID2}
    fields.update(overrides)
    return list(fields.values())


def vstate_body(**overrides: object) -> list[object]:
    fields: dict[str, object] = {"channel": ID3, "version": 0, "assets": [ETH],
                                 "balances": [[b"\x03", b"\x02"]], "final": False}
    fields.update(overrides)
    return list(fields.values())


LOCK_ENTRY = [ID3, [b"\x05"], [0, 1]]


def update_body(**overrides: object) -> list[object]:
    fields: dict[str, object] = {"channel": ID, "version": 4, "assets": [ETH],
                                 "balances": [[b"\x01", b"\x02"]], "final": False, "sig": SIG,
                                 "locks": [LOCK_ENTRY]}
    fields.update(overrides)
    return [v for v in fields.values() if v is not _ABSENT]


_ABSENT = object()


def lock_body(update: object = None, params: object = None, vstate: object = None,
              *extra: object) -> list[object]:
    return [update_body() if update is None else update,
            params_body() if params is None else params,
            vstate_body() if vstate is None else vstate, SIG, SIG2, *extra]


def propose_body(**overrides: object) -> list[object]:
    fields: dict[str, object] = {"pid": ID, "chain": b"\x05\x39", "adjudicator": B,
                                 "duration": 3600, "share": ID2, "assets": [ETH],
                                 "balances": [[b"\x01", b""]], "participant": A,
                                 "intermediary": B, "parent": ID3}
    fields.update(overrides)
    return list(fields.values())


def test_valid_handmade_virtual_messages_decode() -> None:
    vp = VirtualParams(7200, 5, (A, B), (ChannelID(ID), ChannelID(ID2)))
    v0 = State(ChannelID(ID3), 0, (ETH,), ((3, 2),), False)
    ledger = State(ChannelID(ID), 4, (ETH,), ((1, 2),), False,
                   (SubAlloc(ChannelID(ID3), (5,), (0, 1)),))
    proof = VirtualProof(vp, v0, (SIG, SIG2))
    assert decode(frame(TYPE_VIRTUAL_LOCK, lock_body())) == VirtualLock(ledger, SIG, proof)
    assert decode(frame(TYPE_VIRTUAL_FOLD, lock_body())) == VirtualFold(ledger, SIG, proof)
    plain = State(ChannelID(ID), 4, (ETH,), ((1, 2),), False)
    folded = decode(frame(TYPE_VIRTUAL_FOLD, lock_body(update_body(locks=_ABSENT))))
    assert folded == VirtualFold(plain, SIG, proof)
    assert decode(frame(TYPE_VIRTUAL_PROPOSE, propose_body())) == VirtualPropose(
        ID, 1337, B, 3600, ID2, (ETH,), ((1, 0),), A, B, ChannelID(ID3))
    assert decode(frame(TYPE_VIRTUAL_ACCEPT, [ID, ID2, A, ID3, SIG])) == VirtualAccept(
        ID, ID2, A, ChannelID(ID3), SIG)


HOSTILE: dict[str, bytes] = {
    "propose short": frame(TYPE_VIRTUAL_PROPOSE, propose_body()[:-1]),
    "propose long": frame(TYPE_VIRTUAL_PROPOSE, [*propose_body(), 1]),
    "propose parent 20 bytes": frame(TYPE_VIRTUAL_PROPOSE, propose_body(parent=A)),
    "propose intermediary 32 bytes": frame(TYPE_VIRTUAL_PROPOSE, propose_body(intermediary=ID)),
    "propose balances rows != assets": frame(TYPE_VIRTUAL_PROPOSE,
                                             propose_body(balances=[[b"", b""]] * 2)),
    "propose chain id not minimal": frame(TYPE_VIRTUAL_PROPOSE, propose_body(chain=b"\x00\x05")),
    "accept short": frame(TYPE_VIRTUAL_ACCEPT, [ID, ID2, A, ID3]),
    "accept parent 31 bytes": frame(TYPE_VIRTUAL_ACCEPT, [ID, ID2, A, ID3[:31], SIG]),
    "accept signature 64 bytes": frame(TYPE_VIRTUAL_ACCEPT, [ID, ID2, A, ID3, SIG[:64]]),
    "lock of four parts": frame(TYPE_VIRTUAL_LOCK, lock_body()[:4]),
    "lock of six parts": frame(TYPE_VIRTUAL_LOCK, lock_body(None, None, None, SIG)),
    "lock update not an array": frame(TYPE_VIRTUAL_LOCK, lock_body(update=b"x")),
    "lock update of five fields": frame(TYPE_VIRTUAL_LOCK, lock_body(update_body()[:5])),
    "lock update with a memo": frame(TYPE_VIRTUAL_LOCK, lock_body(
        [*update_body(), {"m": [[[b"\x01"], False, None]]}])),
    "lock update memo instead of locks": frame(TYPE_VIRTUAL_LOCK, lock_body(
        update_body(locks={"m": [[[b"\x01"], False, None]]}))),
    "lock update with empty locks": frame(TYPE_VIRTUAL_LOCK, lock_body(update_body(locks=[]))),
    "lock update bad lock": frame(TYPE_VIRTUAL_LOCK, lock_body(
        update_body(locks=[[ID3, [b"\x05"], [1, 1]]]))),
    "params of five": frame(TYPE_VIRTUAL_LOCK, lock_body(None, params_body()[:5])),
    "params not an array": frame(TYPE_VIRTUAL_LOCK, lock_body(None, {"d": 1})),
    "params zero duration": frame(TYPE_VIRTUAL_LOCK, lock_body(None, params_body(duration=0))),
    "params negative duration": frame(TYPE_VIRTUAL_LOCK,
                                          lock_body(None, params_body(duration=-1))),
    "params nonce not minimal": frame(TYPE_VIRTUAL_LOCK, lock_body(None,
                                                                   params_body(nonce=b"\x00"))),
    "params nonce 33 bytes": frame(TYPE_VIRTUAL_LOCK,
                                   lock_body(None, params_body(nonce=b"\x01" * 33))),
    "params same participants": frame(TYPE_VIRTUAL_LOCK, lock_body(None, params_body(p1=A))),
    "params same parents": frame(TYPE_VIRTUAL_LOCK, lock_body(None, params_body(l1=ID))),
    "params parent 20 bytes": frame(TYPE_VIRTUAL_LOCK, lock_body(None, params_body(l0=A))),
    "params participant 32 bytes": frame(TYPE_VIRTUAL_LOCK, lock_body(None, params_body(p0=ID))),
    "virtual state with locks": frame(TYPE_VIRTUAL_LOCK, lock_body(
        None, None, [*vstate_body(), [LOCK_ENTRY]])),
    "virtual state of four": frame(TYPE_VIRTUAL_LOCK, lock_body(None, None, vstate_body()[:4])),
    "virtual state final as int": frame(TYPE_VIRTUAL_LOCK, lock_body(
        None, None, vstate_body(final=1))),
    "virtual state without assets": frame(TYPE_VIRTUAL_LOCK, lock_body(
        None, None, vstate_body(assets=[], balances=[]))),
    "virtual signature 66 bytes": frame(TYPE_VIRTUAL_FOLD,
                                        [update_body(), params_body(), vstate_body(), SIG,
                                         SIG2 + b"\x00"]),
    "virtual signature as text": frame(TYPE_VIRTUAL_FOLD, [update_body(), params_body(),
                                                           vstate_body(), "sig", SIG2]),
    "lock fee of zero": frame(TYPE_VIRTUAL_LOCK, lock_body(None, None, None, [b""])),
    "lock fee of two amounts for one asset": frame(TYPE_VIRTUAL_LOCK, lock_body(
        None, None, None, [b"\x01", b"\x01"])),
    "lock fee empty": frame(TYPE_VIRTUAL_LOCK, lock_body(None, None, None, [])),
    "lock fee not minimal": frame(TYPE_VIRTUAL_LOCK, lock_body(None, None, None, [b"\x00\x01"])),
    "lock fee 33 bytes": frame(TYPE_VIRTUAL_LOCK, lock_body(None, None, None, [b"\x01" * 33])),
    "lock fee as an int": frame(TYPE_VIRTUAL_LOCK, lock_body(None, None, None, [1])),
    "lock of seven parts": frame(TYPE_VIRTUAL_LOCK, lock_body(None, None, None, [b"\x01"], 1)),
    "fold with a fee": frame(TYPE_VIRTUAL_FOLD, lock_body(None, None, None, [b"\x01"])),
    "fee query short": frame(TYPE_FEE_QUERY, [ID, [ETH]]),
    "fee query long": frame(TYPE_FEE_QUERY, [ID, [ETH], [b"\x01"], 1]),
    "fee query id 31 bytes": frame(TYPE_FEE_QUERY, [ID[:31], [ETH], [b"\x01"]]),
    "fee query totals != assets": frame(TYPE_FEE_QUERY, [ID, [ETH], [b"\x01", b"\x02"]]),
    "fee query no assets": frame(TYPE_FEE_QUERY, [ID, [], []]),
    "fee query total negative": frame(TYPE_FEE_QUERY, [ID, [ETH], [-1]]),
    "fee quote empty": frame(TYPE_FEE_QUOTE, [ID, []]),
    "fee quote of 17 amounts": frame(TYPE_FEE_QUOTE, [ID, [b"\x01"] * 17]),
    "fee quote amount not minimal": frame(TYPE_FEE_QUOTE, [ID, [b"\x00"]]),
    "fee quote as a map": frame(TYPE_FEE_QUOTE, [ID, {"ETH": b"\x01"}]),
    "fee quote short": frame(TYPE_FEE_QUOTE, [ID]),
}


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_payload_is_refused(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(payload)


VP_SAME_ID = VirtualParams(1, 1, (A, B), (ChannelID(ID), ChannelID(ID2)))
MALFORMED: dict[str, object] = {
    "proof of a locked state": VirtualLock(
        LEDGER_LOCKED, SIG, VirtualProof(VP, LEDGER_LOCKED, (SIG, SIG2))),
    "one virtual signature": VirtualLock(
        LEDGER_LOCKED, SIG, VirtualProof(VP, V0, (SIG,))),  # type: ignore[arg-type]
    "short ledger signature": VirtualFold(
        LEDGER_FOLDED, Signature(SIG[:64]), VirtualProof(VP, VF, (SIG, SIG2))),
    "proof not a VirtualProof": VirtualFold(LEDGER_FOLDED, SIG, (VP, VF)),  # type: ignore[arg-type]
    "propose parent 20 bytes": VirtualPropose(ID, 1, B, 1, ID2, (ETH,), ((1, 1),), A, B,
                                              ChannelID(A)),
    "accept intermediary as str": VirtualAccept(ID, ID2, "0x00", ChannelID(ID3),  # type: ignore[arg-type]
                                                SIG),
    "propose assets as list": VirtualPropose(ID, 1, B, 1, ID2, [ETH],  # type: ignore[arg-type]
                                             ((1, 1),), A, B, ChannelID(ID3)),
    "lock with a fee of zero": VirtualLock(
        LEDGER_LOCKED, SIG, VirtualProof(VP, V0, (SIG, SIG2), (0,))),
    "lock with a fee per ledger asset": VirtualLock(
        LEDGER_LOCKED, SIG, VirtualProof(VP, V0, (SIG, SIG2), (1, 1))),
    "lock with a negative fee": VirtualLock(
        LEDGER_LOCKED, SIG, VirtualProof(VP, V0, (SIG, SIG2), (-1,))),
    "fold with a fee": VirtualFold(LEDGER_FOLDED, SIG2, VirtualProof(VP, VF, (SIG2, SIG), (1,))),
    "fee query totals != assets": FeeQuery(ID, (ETH,), (1, 2)),
    "fee query id 20 bytes": FeeQuery(A, (ETH,), (1,)),
    "fee quote empty": FeeQuote(ID, ()),
    "fee quote as a list": FeeQuote(ID, [1]),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("msg", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_message_is_not_encoded(msg: Message) -> None:
    with pytest.raises(EncodeError):
        encode(msg)


def test_lock_and_fold_are_answered_like_updates_of_the_ledger() -> None:
    lock, fold = GOLDEN[2][0], GOLDEN[4][0]
    assert request_key(lock) == response_key(UpdateAccept(ChannelID(ID), 4, SIG))
    assert request_key(lock) == response_key(UpdateReject(ChannelID(ID), 4, "no match"))
    assert request_key(fold) == response_key(UpdateAccept(ChannelID(ID), 6, SIG))
    assert channel_id_of(lock) == ID and channel_id_of(fold) == ID
    assert response_key(lock) is None


def test_virtual_proposals_are_answered_like_proposals() -> None:
    propose, accept = GOLDEN[0][0], GOLDEN[1][0]
    assert request_key(propose) == response_key(accept) == ("propose", ID)
    assert channel_id_of(propose) is None and channel_id_of(accept) is None
    assert request_key(accept) is None and response_key(propose) is None


def test_a_fee_query_is_answered_like_a_proposal() -> None:
    query = FeeQuery(ID, (ETH,), (5,))
    assert request_key(query) == response_key(FeeQuote(ID, (1,))) == ("propose", ID)
    assert request_key(query) == response_key(Reject(ID, "not an intermediary"))
    assert channel_id_of(query) is None and response_key(query) is None


def test_a_lock_without_a_fee_decodes_as_fee_zero() -> None:
    lock = decode(frame(TYPE_VIRTUAL_LOCK, lock_body()))
    assert isinstance(lock, VirtualLock) and lock.proof.fee == ()
    paid = decode(frame(TYPE_VIRTUAL_LOCK, lock_body(None, None, None, [b"\x07"])))
    assert isinstance(paid, VirtualLock) and paid.proof.fee == (7,)
