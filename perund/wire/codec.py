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

from perund.channel.memo import MAX_PARTS, MAX_REFERENCE, Memo, PaymentPart, reference_problem
from perund.channel.types import (
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
from perund.errors import DecodeError, EncodeError
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


MAX_REASON_LENGTH: Final = 256
"""Longest reason string (in characters) of a Reject or UpdateReject."""

MAX_PING_NONCE: Final = 32
"""Longest Ping/Pong nonce, in bytes."""

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


def _e_bytes(value: object, size: int, what: str) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise EncodeError(f"{what} must be {size} bytes")
    return value


def _e_uint64(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= UINT64_MAX:
        raise EncodeError(f"{what} must be an int in 0..2**64-1")
    return value


def _e_big(value: object, what: str) -> bytes:
    if type(value) is not int or not 0 <= value <= UINT256_MAX:
        raise EncodeError(f"{what} must be an int in 0..2**256-1")
    return value.to_bytes((value.bit_length() + 7) >> 3, "big")


def _e_reason(value: object) -> str:
    if type(value) is not str or len(value) > MAX_REASON_LENGTH:
        raise EncodeError(f"reason must be a str of at most {MAX_REASON_LENGTH} characters")
    return value


def _e_ping_nonce(value: object) -> bytes:
    if type(value) is not bytes or len(value) > MAX_PING_NONCE:
        raise EncodeError(f"ping nonce must be at most {MAX_PING_NONCE} bytes")
    return value


def _e_assets(assets: object) -> tuple[bytes, ...]:
    if type(assets) is not tuple or not 0 < len(assets) <= MAX_ASSETS:
        raise EncodeError(f"assets must be a tuple of 1..{MAX_ASSETS} addresses")
    for asset in assets:
        _e_bytes(asset, 20, "asset")
    return assets


def _e_balances(balances: object, n_assets: int) -> tuple[tuple[bytes, bytes], ...]:
    if type(balances) is not tuple or len(balances) != n_assets:
        raise EncodeError("balances must hold one row per asset")
    rows = []
    for row in balances:
        if type(row) is not tuple or len(row) != 2:
            raise EncodeError("a balance row has two amounts")
        rows.append((_e_big(row[0], "balance"), _e_big(row[1], "balance")))
    return tuple(rows)


def _e_locked(locked: object, n_assets: int) -> tuple[Any, ...]:
    if type(locked) is not tuple or len(locked) > MAX_SUB_ALLOCS:
        raise EncodeError(f"locked must be a tuple of at most {MAX_SUB_ALLOCS} sub-allocations")
    out = []
    for lock in locked:
        if type(lock) is not SubAlloc:
            raise EncodeError("a lock must be a SubAlloc")
        amounts = lock.balances
        if type(amounts) is not tuple or len(amounts) != n_assets:
            raise EncodeError("a lock holds one amount per asset")
        index_map = lock.index_map
        if index_map not in ((0, 1), (1, 0)) or any(type(i) is not int for i in index_map):
            raise EncodeError("an index map is (0, 1) or (1, 0)")
        out.append(
            (
                _e_bytes(lock.channel_id, 32, "locked channel ID"),
                tuple(_e_big(amount, "locked amount") for amount in amounts),
                index_map,
            )
        )
    if len({entry[0] for entry in out}) != len(out):
        raise EncodeError("a virtual channel is locked at most once")
    return tuple(out)


def _e_state_locks(state: State) -> tuple[Any, ...]:
    """The trailing field a message carries after the state's signatures: `(locked,)` when the
    state locks funds, else nothing (so states without locks encode exactly as before)."""
    if not state.locked:
        return ()
    return (_e_locked(state.locked, len(state.assets)),)


def _e_state(state: State) -> tuple[Any, ...]:
    if type(state) is not State:
        raise EncodeError("state must be a State")
    assets = _e_assets(state.assets)
    if type(state.is_final) is not bool:
        raise EncodeError("is_final must be a bool")
    return (
        _e_bytes(state.channel_id, 32, "channel ID"),
        _e_uint64(state.version, "version"),
        assets,
        _e_balances(state.balances, len(assets)),
        state.is_final,
    )


def _enc_hello(m: Hello) -> tuple[Any, ...]:
    if type(m.protocol_version) is not int or not 0 <= m.protocol_version <= UINT32_MAX:
        raise EncodeError("protocol version must be a uint32")
    return (m.protocol_version, _e_bytes(m.address, 20, "address"), _e_bytes(m.nonce, 32, "nonce"))


def _enc_auth(m: Auth) -> tuple[Any, ...]:
    return (_e_bytes(m.signature, 65, "signature"),)


def _enc_propose(m: Propose) -> tuple[Any, ...]:
    assets = _e_assets(m.assets)
    return (
        _e_bytes(m.proposal_id, 32, "proposal ID"),
        _e_big(m.chain_id, "chain ID"),
        _e_bytes(m.adjudicator, 20, "adjudicator"),
        _e_uint64(m.challenge_duration, "challenge duration"),
        _e_bytes(m.nonce_share, 32, "nonce share"),
        assets,
        _e_balances(m.balances, len(assets)),
        _e_bytes(m.participant, 20, "participant"),
        _e_bytes(m.receiver, 20, "receiver"),
    )


def _enc_accept(m: Accept) -> tuple[Any, ...]:
    return (
        _e_bytes(m.proposal_id, 32, "proposal ID"),
        _e_bytes(m.nonce_share, 32, "nonce share"),
        _e_bytes(m.participant, 20, "participant"),
        _e_bytes(m.receiver, 20, "receiver"),
        _e_bytes(m.signature, 65, "signature"),
    )


def _enc_reject(m: Reject) -> tuple[Any, ...]:
    return (_e_bytes(m.proposal_id, 32, "proposal ID"), _e_reason(m.reason))


def _e_memo(memo: object, n_assets: int) -> tuple[Any, ...]:
    """The memo's trailing field, a map `{"m": [[amounts, request, reference], ...]}` (a map,
    so that it is told apart from the locks, an array), or nothing for an empty memo."""
    if type(memo) is not tuple or len(memo) > MAX_PARTS:
        raise EncodeError(f"a memo is a tuple of at most {MAX_PARTS} payment parts")
    if not memo:
        return ()
    parts = []
    for part in memo:
        if type(part) is not PaymentPart or type(part.amounts) is not tuple \
                or len(part.amounts) != n_assets or type(part.request) is not bool:
            raise EncodeError("a memo part is a PaymentPart with one amount per asset")
        reference = part.reference
        if reference is not None and (type(reference) is not str
                                      or reference_problem(reference) is not None):
            raise EncodeError(f"a reference is printable text of at most {MAX_REFERENCE} "
                              "characters")
        parts.append((tuple(_e_big(a, "memo amount") for a in part.amounts), part.request,
                      reference))
    return ({"m": tuple(parts)},)


def _enc_update(m: Update) -> tuple[Any, ...]:
    return (
        *_e_state(m.state),
        _e_bytes(m.signature, 65, "signature"),
        *_e_state_locks(m.state),
        *_e_memo(m.memo, len(m.state.assets)),
    )


def _enc_update_accept(m: UpdateAccept) -> tuple[Any, ...]:
    return (
        _e_bytes(m.channel_id, 32, "channel ID"),
        _e_uint64(m.version, "version"),
        _e_bytes(m.signature, 65, "signature"),
    )


def _enc_update_reject(m: UpdateReject) -> tuple[Any, ...]:
    return (
        _e_bytes(m.channel_id, 32, "channel ID"),
        _e_uint64(m.version, "version"),
        _e_reason(m.reason),
    )


def _enc_channel_closed(m: ChannelClosed) -> tuple[Any, ...]:
    return (_e_bytes(m.channel_id, 32, "channel ID"), _e_reason(m.reason))


def _enc_sync(m: Sync) -> tuple[Any, ...]:
    sigs = m.signatures
    if type(sigs) is not tuple or len(sigs) != 2:
        raise EncodeError("a Sync carries two signatures")
    return (
        *_e_state(m.state),
        _e_bytes(sigs[0], 65, "signature"),
        _e_bytes(sigs[1], 65, "signature"),
        *_e_state_locks(m.state),
        *_e_awaiting(m.awaiting, m.state.version),
    )


def _e_awaiting(awaiting: object, version: int) -> tuple[Any, ...]:
    """A Sync's trailing `awaiting` (an int, so told apart from the locks, an array): present
    only when an update above the state awaits an answer, so a Sync without one keeps its
    bytes and each Sync has one encoding."""
    if awaiting == 0 and type(awaiting) is int:
        return ()
    if _e_uint64(awaiting, "awaiting") <= version:
        raise EncodeError("a Sync awaits an update above its state's version, or none (0)")
    return (awaiting,)


def _enc_ping(m: Ping | Pong) -> tuple[Any, ...]:
    return (_e_ping_nonce(m.nonce),)


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


def _d_bytes(value: object, size: int, what: str) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise DecodeError(f"{what} must be {size} bytes")
    return value


def _d_uint64(value: object, what: str) -> int:
    # msgpack yields bool for true/false and int for integers; `type is int` refuses a bool.
    if type(value) is not int or not 0 <= value <= UINT64_MAX:
        raise DecodeError(f"{what} must be a uint64")
    return value


def _d_big(value: object, what: str) -> int:
    # Canonical form only (no leading zero byte), so every amount has exactly one encoding.
    if type(value) is not bytes or len(value) > 32 or (value and value[0] == 0):
        raise DecodeError(f"{what} must be a minimal big-endian uint256")
    return int.from_bytes(value, "big")


def _d_reason(value: object) -> str:
    if type(value) is not str or len(value) > MAX_REASON_LENGTH:
        raise DecodeError(f"reason must be a string of at most {MAX_REASON_LENGTH} characters")
    return value


def _d_ping_nonce(value: object) -> bytes:
    if type(value) is not bytes or len(value) > MAX_PING_NONCE:
        raise DecodeError(f"ping nonce must be at most {MAX_PING_NONCE} bytes")
    return value


def _d_assets(value: object) -> tuple[Address, ...]:
    if type(value) is not tuple or not 0 < len(value) <= MAX_ASSETS:
        raise DecodeError(f"assets must be a list of 1..{MAX_ASSETS} addresses")
    for asset in value:
        if type(asset) is not bytes or len(asset) != 20:
            raise DecodeError("an asset is a 20-byte address")
    return value


def _d_balances(value: object, n_assets: int) -> tuple[tuple[int, int], ...]:
    if type(value) is not tuple or len(value) != n_assets:
        raise DecodeError("balances must hold one row per asset")
    rows = []
    for row in value:
        if type(row) is not tuple or len(row) != 2:
            raise DecodeError("a balance row has two amounts")
        rows.append((_d_big(row[0], "balance"), _d_big(row[1], "balance")))
    return tuple(rows)


def _d_locked(value: object, n_assets: int) -> tuple[SubAlloc, ...]:
    # Present only when non-empty: an empty list would be a second encoding of "no locks".
    if type(value) is not tuple or not 0 < len(value) <= MAX_SUB_ALLOCS:
        raise DecodeError(f"locked must be a list of 1..{MAX_SUB_ALLOCS} sub-allocations")
    locks = []
    for entry in value:
        if type(entry) is not tuple or len(entry) != 3:
            raise DecodeError("a lock is [channel ID, amounts, index map]")
        channel, amounts, index_map = entry
        if type(amounts) is not tuple or len(amounts) != n_assets:
            raise DecodeError("a lock holds one amount per asset")
        if index_map not in ((0, 1), (1, 0)) or any(type(i) is not int for i in index_map):
            raise DecodeError("an index map is [0, 1] or [1, 0]")
        locks.append(
            SubAlloc(
                ChannelID(_d_bytes(channel, 32, "locked channel ID")),
                tuple(_d_big(amount, "locked amount") for amount in amounts),
                index_map,
            )
        )
    if len({lock.channel_id for lock in locks}) != len(locks):
        raise DecodeError("a virtual channel is locked at most once")
    return tuple(locks)


def _d_state(body: tuple[Any, ...], trailing: tuple[Any, ...] = ()) -> State:
    """The State in `body[:5]`; `trailing` is the message's optional last field, the locks
    (`()` when absent)."""
    channel, version, assets, balances, is_final = body[:5]
    checked_assets = _d_assets(assets)
    if type(is_final) is not bool:
        raise DecodeError("is_final must be a bool")
    locks = _d_locked(trailing[0], len(checked_assets)) if trailing else ()
    try:
        return State(
            ChannelID(_d_bytes(channel, 32, "channel ID")),
            _d_uint64(version, "version"),
            checked_assets,
            _d_balances(balances, len(checked_assets)),
            is_final,
            locks,
        )
    except ValueError as exc:  # pragma: no cover - the checks above cover State's own rules
        raise DecodeError(f"invalid state: {exc}") from exc


def _dec_hello(b: tuple[Any, ...]) -> Hello:
    version, address, nonce = b
    if type(version) is not int or not 0 <= version <= UINT32_MAX:
        raise DecodeError("protocol version must be a uint32")
    return Hello(version, Address(_d_bytes(address, 20, "address")), _d_bytes(nonce, 32, "nonce"))


def _dec_auth(b: tuple[Any, ...]) -> Auth:
    return Auth(Signature(_d_bytes(b[0], 65, "signature")))


def _dec_propose(b: tuple[Any, ...]) -> Propose:
    pid, chain, adjudicator, duration, share, assets, balances, participant, receiver = b
    checked_assets = _d_assets(assets)
    return Propose(
        proposal_id=_d_bytes(pid, 32, "proposal ID"),
        chain_id=_d_big(chain, "chain ID"),
        adjudicator=Address(_d_bytes(adjudicator, 20, "adjudicator")),
        challenge_duration=_d_uint64(duration, "challenge duration"),
        nonce_share=_d_bytes(share, 32, "nonce share"),
        assets=checked_assets,
        balances=_d_balances(balances, len(checked_assets)),
        participant=Address(_d_bytes(participant, 20, "participant")),
        receiver=Address(_d_bytes(receiver, 20, "receiver")),
    )


def _dec_accept(b: tuple[Any, ...]) -> Accept:
    pid, share, participant, receiver, sig = b
    return Accept(
        proposal_id=_d_bytes(pid, 32, "proposal ID"),
        nonce_share=_d_bytes(share, 32, "nonce share"),
        participant=Address(_d_bytes(participant, 20, "participant")),
        receiver=Address(_d_bytes(receiver, 20, "receiver")),
        signature=Signature(_d_bytes(sig, 65, "signature")),
    )


def _dec_reject(b: tuple[Any, ...]) -> Reject:
    return Reject(_d_bytes(b[0], 32, "proposal ID"), _d_reason(b[1]))


def _d_memo(value: object, n_assets: int) -> Memo:
    if type(value) is not dict or set(value) != {"m"}:
        raise DecodeError("a memo is a map with one key, m")
    parts = value["m"]
    if type(parts) is not tuple or not 0 < len(parts) <= MAX_PARTS:
        raise DecodeError(f"a memo lists 1 to {MAX_PARTS} payment parts")
    decoded = []
    for part in parts:
        if type(part) is not tuple or len(part) != 3:
            raise DecodeError("a memo part is [amounts, request, reference]")
        amounts, request, reference = part
        if type(amounts) is not tuple or len(amounts) != n_assets:
            raise DecodeError("a memo part has one amount per asset")
        if type(request) is not bool:
            raise DecodeError("a memo part's request flag must be a bool")
        if reference is not None and (type(reference) is not str
                                      or reference_problem(reference) is not None):
            raise DecodeError(f"a reference is printable text of at most {MAX_REFERENCE} "
                              "characters")
        decoded.append(PaymentPart(_d_amounts(amounts), request, reference))
    return tuple(decoded)


def _d_amounts(amounts: tuple[Any, ...]) -> tuple[int, ...]:
    """`_d_big` of each of `amounts`, inlined: a peer's memo may carry 256 parts of 16
    amounts in one frame, and a call each was a third of its decoding."""
    for amount in amounts:
        if type(amount) is not bytes or len(amount) > 32 or (amount and amount[0] == 0):
            raise DecodeError("memo amount must be a minimal big-endian uint256")
    return tuple([int.from_bytes(amount, "big") for amount in amounts])


def _dec_update(b: tuple[Any, ...]) -> Update:
    # After the signature: the locks (an array) if the state has any, then the memo (a map).
    trailing = b[6:]
    memo: Memo = ()
    if trailing and type(trailing[-1]) is dict:
        trailing, last = trailing[:-1], trailing[-1]
        state = _d_state(b, trailing)
        memo = _d_memo(last, len(state.assets))
    else:
        if len(trailing) > 1:
            raise DecodeError("after the locks only a memo (a map) may follow")
        state = _d_state(b, trailing)
    return Update(state, Signature(_d_bytes(b[5], 65, "signature")), memo)


def _dec_update_accept(b: tuple[Any, ...]) -> UpdateAccept:
    return UpdateAccept(
        ChannelID(_d_bytes(b[0], 32, "channel ID")),
        _d_uint64(b[1], "version"),
        Signature(_d_bytes(b[2], 65, "signature")),
    )


def _dec_update_reject(b: tuple[Any, ...]) -> UpdateReject:
    return UpdateReject(
        ChannelID(_d_bytes(b[0], 32, "channel ID")), _d_uint64(b[1], "version"), _d_reason(b[2])
    )


def _dec_sync(b: tuple[Any, ...]) -> Sync:
    # After the signatures: the locks (an array) if the state has any, then `awaiting` (an int)
    # if an update of the sender's awaits an answer.
    trailing = b[7:]
    present = bool(trailing) and type(trailing[-1]) is int
    awaiting = _d_uint64(trailing[-1], "awaiting") if present else 0
    if present:
        trailing = trailing[:-1]
    if len(trailing) > 1:
        raise DecodeError("after the locks only awaiting (an int) may follow")
    state = _d_state(b, trailing)
    if present and awaiting <= state.version:
        raise DecodeError("a Sync awaits an update above its state's version, or none")
    return Sync(
        state,
        (
            Signature(_d_bytes(b[5], 65, "signature")),
            Signature(_d_bytes(b[6], 65, "signature")),
        ),
        awaiting,
    )


def _dec_channel_closed(b: tuple[Any, ...]) -> ChannelClosed:
    return ChannelClosed(ChannelID(_d_bytes(b[0], 32, "channel ID")), _d_reason(b[1]))


def _dec_ping(b: tuple[Any, ...]) -> Ping:
    return Ping(_d_ping_nonce(b[0]))


def _dec_pong(b: tuple[Any, ...]) -> Pong:
    return Pong(_d_ping_nonce(b[0]))


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
