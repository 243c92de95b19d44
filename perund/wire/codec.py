"""The versioned binary codec of peer messages (docs/wire.md has the byte layout).

A frame payload is `format version (1 byte) ‖ message type (1 byte) ‖ msgpack body`. Bodies are
msgpack arrays (positional, no field names: smaller and faster than maps). Integers that may
exceed 2**64 (wei amounts, the chain ID) travel as minimal big-endian byte strings (zero is the
empty string), because msgpack integers stop at 64 bits; versions and durations are uint64 and
travel as msgpack integers.

Decoding is strict: every field has one type and one length, integers one canonical encoding,
counts have limits, and nothing may follow the body. Anything else raises `DecodeError`. Encoding
checks the same rules and raises `EncodeError` (a bug in this node), so what one perund node
encodes, another always decodes.

The encoder reuses one msgpack Packer per thread (half the cost of `msgpack.packb`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

import msgpack

from perund.channel.memo import Memo
from perund.channel.types import Address, ChannelID, Signature
from perund.errors import DecodeError, EncodeError
from perund.wire.fields import (
    decode_assets,
    decode_balances,
    decode_big,
    decode_bytes,
    decode_memo,
    decode_ping_nonce,
    decode_reason,
    decode_state,
    decode_uint64,
    encode_assets,
    encode_balances,
    encode_big,
    encode_bytes,
    encode_memo,
    encode_ping_nonce,
    encode_reason,
    encode_state,
    encode_state_locks,
    encode_uint64,
)
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
)

FORMAT_VERSION: Final = 1
"""Version of the byte layout; a frame with another first byte is refused."""


UINT32_MAX: Final = 2**32 - 1

# Message type codes. Never reuse or renumber one: golden vectors in tests pin them.
TYPE_HELLO: Final = 1
TYPE_AUTH: Final = 2
TYPE_PROPOSE: Final = 3
TYPE_ACCEPT: Final = 4
TYPE_REJECT: Final = 5
TYPE_UPDATE: Final = 6
TYPE_UPDATE_ACCEPT: Final = 7
TYPE_UPDATE_REJECT: Final = 8
TYPE_SYNC: Final = 9
TYPE_PING: Final = 10
TYPE_PONG: Final = 11
TYPE_CHANNEL_CLOSED: Final = 18
"""After the virtual-channel types (12 to 17, `perund.wire.virtual_codec`)."""


# --------------------------------------------------------------------------------------------
# Encoding


class _PackerPerThread(threading.local):
    """One reusable Packer per thread: a Packer keeps an internal buffer, so it is not shareable."""

    def __init__(self) -> None:
        self.packer = msgpack.Packer(use_bin_type=True, autoreset=True)


_packers = _PackerPerThread()


def _enc_hello(m: Hello) -> tuple[Any, ...]:
    if type(m.protocol_version) is not int or not 0 <= m.protocol_version <= UINT32_MAX:
        raise EncodeError("protocol version must be a uint32")
    return (m.protocol_version, encode_bytes(m.address, 20, "address"),
            encode_bytes(m.nonce, 32, "nonce"))


def _enc_auth(m: Auth) -> tuple[Any, ...]:
    return (encode_bytes(m.signature, 65, "signature"),)


def _enc_propose(m: Propose) -> tuple[Any, ...]:
    assets = encode_assets(m.assets)
    return (
        encode_bytes(m.proposal_id, 32, "proposal ID"),
        encode_big(m.chain_id, "chain ID"),
        encode_bytes(m.adjudicator, 20, "adjudicator"),
        encode_uint64(m.challenge_duration, "challenge duration"),
        encode_bytes(m.nonce_share, 32, "nonce share"),
        assets,
        encode_balances(m.balances, len(assets)),
        encode_bytes(m.participant, 20, "participant"),
        encode_bytes(m.receiver, 20, "receiver"),
    )


def _enc_accept(m: Accept) -> tuple[Any, ...]:
    return (
        encode_bytes(m.proposal_id, 32, "proposal ID"),
        encode_bytes(m.nonce_share, 32, "nonce share"),
        encode_bytes(m.participant, 20, "participant"),
        encode_bytes(m.receiver, 20, "receiver"),
        encode_bytes(m.signature, 65, "signature"),
    )


def _enc_reject(m: Reject) -> tuple[Any, ...]:
    return (encode_bytes(m.proposal_id, 32, "proposal ID"), encode_reason(m.reason))


def _enc_update(m: Update) -> tuple[Any, ...]:
    return (
        *encode_state(m.state),
        encode_bytes(m.signature, 65, "signature"),
        *encode_state_locks(m.state),
        *encode_memo(m.memo, len(m.state.assets)),
    )


def _enc_update_accept(m: UpdateAccept) -> tuple[Any, ...]:
    return (
        encode_bytes(m.channel_id, 32, "channel ID"),
        encode_uint64(m.version, "version"),
        encode_bytes(m.signature, 65, "signature"),
    )


def _enc_update_reject(m: UpdateReject) -> tuple[Any, ...]:
    return (
        encode_bytes(m.channel_id, 32, "channel ID"),
        encode_uint64(m.version, "version"),
        encode_reason(m.reason),
    )


def _enc_channel_closed(m: ChannelClosed) -> tuple[Any, ...]:
    return (encode_bytes(m.channel_id, 32, "channel ID"), encode_reason(m.reason))


def _enc_sync(m: Sync) -> tuple[Any, ...]:
    sigs = m.signatures
    if type(sigs) is not tuple or len(sigs) != 2:
        raise EncodeError("a Sync carries two signatures")
    return (
        *encode_state(m.state),
        encode_bytes(sigs[0], 65, "signature"),
        encode_bytes(sigs[1], 65, "signature"),
        *encode_state_locks(m.state),
        *_e_awaiting(m.awaiting, m.state.version),
    )


def _e_awaiting(awaiting: object, version: int) -> tuple[Any, ...]:
    """A Sync's trailing `awaiting` (an int, so told apart from the locks, an array): present
    only when an update above the state awaits an answer, so a Sync without one keeps its
    bytes and each Sync has one encoding."""
    if awaiting == 0 and type(awaiting) is int:
        return ()
    if encode_uint64(awaiting, "awaiting") <= version:
        raise EncodeError("a Sync awaits an update above its state's version, or none (0)")
    return (awaiting,)


def _enc_ping(m: Ping | Pong) -> tuple[Any, ...]:
    return (encode_ping_nonce(m.nonce),)


_ENCODERS: Final[dict[type, tuple[bytes, Callable[[Any], tuple[Any, ...]]]]] = {
    Hello: (bytes((FORMAT_VERSION, TYPE_HELLO)), _enc_hello),
    Auth: (bytes((FORMAT_VERSION, TYPE_AUTH)), _enc_auth),
    Propose: (bytes((FORMAT_VERSION, TYPE_PROPOSE)), _enc_propose),
    Accept: (bytes((FORMAT_VERSION, TYPE_ACCEPT)), _enc_accept),
    Reject: (bytes((FORMAT_VERSION, TYPE_REJECT)), _enc_reject),
    Update: (bytes((FORMAT_VERSION, TYPE_UPDATE)), _enc_update),
    UpdateAccept: (bytes((FORMAT_VERSION, TYPE_UPDATE_ACCEPT)), _enc_update_accept),
    UpdateReject: (bytes((FORMAT_VERSION, TYPE_UPDATE_REJECT)), _enc_update_reject),
    Sync: (bytes((FORMAT_VERSION, TYPE_SYNC)), _enc_sync),
    ChannelClosed: (bytes((FORMAT_VERSION, TYPE_CHANNEL_CLOSED)), _enc_channel_closed),
    Ping: (bytes((FORMAT_VERSION, TYPE_PING)), _enc_ping),
    Pong: (bytes((FORMAT_VERSION, TYPE_PONG)), _enc_ping),
}


def encode(msg: Message) -> bytes:
    """The frame payload of `msg` (without the 4-byte length); `EncodeError` if malformed."""
    entry = _ENCODERS.get(type(msg))
    if entry is None:
        raise EncodeError(f"not a peer message: {type(msg).__name__}")
    header, encoder = entry
    body: bytes = _packers.packer.pack(encoder(msg))
    return header + body


# --------------------------------------------------------------------------------------------
# Decoding


def _dec_hello(b: tuple[Any, ...]) -> Hello:
    version, address, nonce = b
    if type(version) is not int or not 0 <= version <= UINT32_MAX:
        raise DecodeError("protocol version must be a uint32")
    return Hello(version, Address(decode_bytes(address, 20, "address")),
                 decode_bytes(nonce, 32, "nonce"))


def _dec_auth(b: tuple[Any, ...]) -> Auth:
    return Auth(Signature(decode_bytes(b[0], 65, "signature")))


def _dec_propose(b: tuple[Any, ...]) -> Propose:
    pid, chain, adjudicator, duration, share, assets, balances, participant, receiver = b
    checked_assets = decode_assets(assets)
    return Propose(
        proposal_id=decode_bytes(pid, 32, "proposal ID"),
        chain_id=decode_big(chain, "chain ID"),
        adjudicator=Address(decode_bytes(adjudicator, 20, "adjudicator")),
        challenge_duration=decode_uint64(duration, "challenge duration"),
        nonce_share=decode_bytes(share, 32, "nonce share"),
        assets=checked_assets,
        balances=decode_balances(balances, len(checked_assets)),
        participant=Address(decode_bytes(participant, 20, "participant")),
        receiver=Address(decode_bytes(receiver, 20, "receiver")),
    )


def _dec_accept(b: tuple[Any, ...]) -> Accept:
    pid, share, participant, receiver, sig = b
    return Accept(
        proposal_id=decode_bytes(pid, 32, "proposal ID"),
        nonce_share=decode_bytes(share, 32, "nonce share"),
        participant=Address(decode_bytes(participant, 20, "participant")),
        receiver=Address(decode_bytes(receiver, 20, "receiver")),
        signature=Signature(decode_bytes(sig, 65, "signature")),
    )


def _dec_reject(b: tuple[Any, ...]) -> Reject:
    return Reject(decode_bytes(b[0], 32, "proposal ID"), decode_reason(b[1]))


def _dec_update(b: tuple[Any, ...]) -> Update:
    # After the signature: the locks (an array) if the state has any, then the memo (a map).
    trailing = b[6:]
    memo: Memo = ()
    if trailing and type(trailing[-1]) is dict:
        trailing, last = trailing[:-1], trailing[-1]
        state = decode_state(b, trailing)
        memo = decode_memo(last, len(state.assets))
    else:
        if len(trailing) > 1:
            raise DecodeError("after the locks only a memo (a map) may follow")
        state = decode_state(b, trailing)
    return Update(state, Signature(decode_bytes(b[5], 65, "signature")), memo)


def _dec_update_accept(b: tuple[Any, ...]) -> UpdateAccept:
    return UpdateAccept(
        ChannelID(decode_bytes(b[0], 32, "channel ID")),
        decode_uint64(b[1], "version"),
        Signature(decode_bytes(b[2], 65, "signature")),
    )


def _dec_update_reject(b: tuple[Any, ...]) -> UpdateReject:
    return UpdateReject(
        ChannelID(decode_bytes(b[0], 32, "channel ID")), decode_uint64(b[1], "version"),
        decode_reason(b[2]),
    )


def _dec_sync(b: tuple[Any, ...]) -> Sync:
    # After the signatures: the locks (an array) if the state has any, then `awaiting` (an int)
    # if an update of the sender's awaits an answer.
    trailing = b[7:]
    present = bool(trailing) and type(trailing[-1]) is int
    awaiting = decode_uint64(trailing[-1], "awaiting") if present else 0
    if present:
        trailing = trailing[:-1]
    if len(trailing) > 1:
        raise DecodeError("after the locks only awaiting (an int) may follow")
    state = decode_state(b, trailing)
    if present and awaiting <= state.version:
        raise DecodeError("a Sync awaits an update above its state's version, or none")
    return Sync(
        state,
        (
            Signature(decode_bytes(b[5], 65, "signature")),
            Signature(decode_bytes(b[6], 65, "signature")),
        ),
        awaiting,
    )


def _dec_channel_closed(b: tuple[Any, ...]) -> ChannelClosed:
    return ChannelClosed(ChannelID(decode_bytes(b[0], 32, "channel ID")), decode_reason(b[1]))


def _dec_ping(b: tuple[Any, ...]) -> Ping:
    return Ping(decode_ping_nonce(b[0]))


def _dec_pong(b: tuple[Any, ...]) -> Pong:
    return Pong(decode_ping_nonce(b[0]))


# type code -> (name, numbers of body fields, decoder). Update and Sync carry a state's locks
# (sub-allocations) as one more, trailing field, present only when the state has some.
_DECODERS: Final[dict[int, tuple[str, tuple[int, ...], Callable[[tuple[Any, ...]], Message]]]] = {
    TYPE_HELLO: ("Hello", (3,), _dec_hello),
    TYPE_AUTH: ("Auth", (1,), _dec_auth),
    TYPE_PROPOSE: ("Propose", (9,), _dec_propose),
    TYPE_ACCEPT: ("Accept", (5,), _dec_accept),
    TYPE_REJECT: ("Reject", (2,), _dec_reject),
    TYPE_UPDATE: ("Update", (6, 7, 8), _dec_update),
    TYPE_UPDATE_ACCEPT: ("UpdateAccept", (3,), _dec_update_accept),
    TYPE_UPDATE_REJECT: ("UpdateReject", (3,), _dec_update_reject),
    TYPE_SYNC: ("Sync", (7, 8, 9), _dec_sync),
    TYPE_CHANNEL_CLOSED: ("ChannelClosed", (2,), _dec_channel_closed),
    TYPE_PING: ("Ping", (1,), _dec_ping),
    TYPE_PONG: ("Pong", (1,), _dec_pong),
}


def decode(payload: bytes | bytearray | memoryview) -> Message:
    """The message in one frame payload; `DecodeError` for anything but a well-formed message."""
    if len(payload) < 3:
        raise DecodeError("frame too short")
    if payload[0] != FORMAT_VERSION:
        raise DecodeError(f"unknown format version {payload[0]}")
    entry = _DECODERS.get(payload[1])
    if entry is None:
        raise DecodeError(f"unknown message type {payload[1]}")
    name, n_fields, decoder = entry
    try:
        # ExtraData (trailing bytes), truncated input, bad UTF-8, nesting too deep: all refused.
        body = msgpack.unpackb(payload[2:], raw=False, use_list=False, strict_map_key=True)
    except Exception as exc:
        raise DecodeError(f"{name}: malformed msgpack body ({exc.__class__.__name__})") from exc
    if type(body) is not tuple or len(body) not in n_fields:
        shown = " or ".join(str(n) for n in n_fields)
        raise DecodeError(f"{name}: body must be an array of {shown} fields")
    try:
        return decoder(body)
    except DecodeError as exc:
        raise DecodeError(f"{name}: {exc.message}") from None
