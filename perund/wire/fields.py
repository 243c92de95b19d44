"""The field rules of the peer codec (docs/wire.md): each field of a message body checked and
converted one way, for the messages of `perund.wire.codec` and `perund.wire.virtual_codec`.

Encoding checks what this node is about to send and raises `EncodeError` (a bug in this node);
decoding checks what a peer sent and raises `DecodeError`. Both hold the same rules, so what
one perund node encodes, another always decodes: one type and one length per field, integers in
one canonical encoding, counts within their limits.
"""

from __future__ import annotations

from typing import Any, Final

from perund.channel.memo import MAX_PARTS, MAX_REFERENCE, Memo, PaymentPart, reference_problem
from perund.channel.types import (
    MAX_ASSETS,
    MAX_SUB_ALLOCS,
    UINT64_MAX,
    UINT256_MAX,
    Address,
    ChannelID,
    State,
    SubAlloc,
)
from perund.errors import DecodeError, EncodeError

MAX_REASON_LENGTH: Final = 256
"""Longest reason string (in characters) of a Reject or UpdateReject."""

MAX_PING_NONCE: Final = 32
"""Longest Ping/Pong nonce, in bytes."""


def encode_bytes(value: object, size: int, what: str) -> bytes:
    """`value` checked to be exactly `size` bytes (`what` names it in the error)."""
    if type(value) is not bytes or len(value) != size:
        raise EncodeError(f"{what} must be {size} bytes")
    return value


def encode_uint64(value: object, what: str) -> int:
    """`value` checked to be an int in 0..2**64-1 (a msgpack integer)."""
    if type(value) is not int or not 0 <= value <= UINT64_MAX:
        raise EncodeError(f"{what} must be an int in 0..2**64-1")
    return value


def encode_big(value: object, what: str) -> bytes:
    """`value` (0..2**256-1) as its minimal big-endian bytes (zero: empty)."""
    if type(value) is not int or not 0 <= value <= UINT256_MAX:
        raise EncodeError(f"{what} must be an int in 0..2**256-1")
    return value.to_bytes((value.bit_length() + 7) >> 3, "big")


def encode_reason(value: object) -> str:
    """A Reject or UpdateReject reason, checked for type and length."""
    if type(value) is not str or len(value) > MAX_REASON_LENGTH:
        raise EncodeError(f"reason must be a str of at most {MAX_REASON_LENGTH} characters")
    return value


def encode_ping_nonce(value: object) -> bytes:
    """A Ping or Pong nonce, checked for type and length."""
    if type(value) is not bytes or len(value) > MAX_PING_NONCE:
        raise EncodeError(f"ping nonce must be at most {MAX_PING_NONCE} bytes")
    return value


def encode_assets(assets: object) -> tuple[bytes, ...]:
    """A state's asset addresses, checked (1..MAX_ASSETS of 20 bytes each)."""
    if type(assets) is not tuple or not 0 < len(assets) <= MAX_ASSETS:
        raise EncodeError(f"assets must be a tuple of 1..{MAX_ASSETS} addresses")
    for asset in assets:
        encode_bytes(asset, 20, "asset")
    return assets


def encode_balances(balances: object, n_assets: int) -> tuple[tuple[bytes, bytes], ...]:
    """A state's balance rows (two amounts per asset) as minimal byte strings."""
    if type(balances) is not tuple or len(balances) != n_assets:
        raise EncodeError("balances must hold one row per asset")
    rows = []
    for row in balances:
        if type(row) is not tuple or len(row) != 2:
            raise EncodeError("a balance row has two amounts")
        rows.append((encode_big(row[0], "balance"), encode_big(row[1], "balance")))
    return tuple(rows)


def encode_locked(locked: object, n_assets: int) -> tuple[Any, ...]:
    """A state's sub-allocations as `(channel ID, amounts, index map)` entries."""
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
                encode_bytes(lock.channel_id, 32, "locked channel ID"),
                tuple(encode_big(amount, "locked amount") for amount in amounts),
                index_map,
            )
        )
    if len({entry[0] for entry in out}) != len(out):
        raise EncodeError("a virtual channel is locked at most once")
    return tuple(out)


def encode_state_locks(state: State) -> tuple[Any, ...]:
    """The trailing field a message carries after the state's signatures: `(locked,)` when the
    state locks funds, else nothing (so states without locks encode exactly as before)."""
    if not state.locked:
        return ()
    return (encode_locked(state.locked, len(state.assets)),)


def encode_state(state: State) -> tuple[Any, ...]:
    """The five leading body fields of a message carrying `state`."""
    if type(state) is not State:
        raise EncodeError("state must be a State")
    assets = encode_assets(state.assets)
    if type(state.is_final) is not bool:
        raise EncodeError("is_final must be a bool")
    return (
        encode_bytes(state.channel_id, 32, "channel ID"),
        encode_uint64(state.version, "version"),
        assets,
        encode_balances(state.balances, len(assets)),
        state.is_final,
    )


def encode_memo(memo: object, n_assets: int) -> tuple[Any, ...]:
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
        parts.append((tuple(encode_big(a, "memo amount") for a in part.amounts), part.request,
                      reference))
    return ({"m": tuple(parts)},)


def decode_bytes(value: object, size: int, what: str) -> bytes:
    """`value` checked to be exactly `size` bytes (`what` names it in the error)."""
    if type(value) is not bytes or len(value) != size:
        raise DecodeError(f"{what} must be {size} bytes")
    return value


def decode_uint64(value: object, what: str) -> int:
    """`value` checked to be an int (not a bool) in 0..2**64-1."""
    # msgpack yields bool for true/false and int for integers; `type is int` refuses a bool.
    if type(value) is not int or not 0 <= value <= UINT64_MAX:
        raise DecodeError(f"{what} must be a uint64")
    return value


def decode_big(value: object, what: str) -> int:
    """The uint256 of a minimal big-endian byte string."""
    # Canonical form only (no leading zero byte), so every amount has exactly one encoding.
    if type(value) is not bytes or len(value) > 32 or (value and value[0] == 0):
        raise DecodeError(f"{what} must be a minimal big-endian uint256")
    return int.from_bytes(value, "big")


def decode_reason(value: object) -> str:
    """A Reject or UpdateReject reason, checked for type and length."""
    if type(value) is not str or len(value) > MAX_REASON_LENGTH:
        raise DecodeError(f"reason must be a string of at most {MAX_REASON_LENGTH} characters")
    return value


def decode_ping_nonce(value: object) -> bytes:
    """A Ping or Pong nonce, checked for type and length."""
    if type(value) is not bytes or len(value) > MAX_PING_NONCE:
        raise DecodeError(f"ping nonce must be at most {MAX_PING_NONCE} bytes")
    return value


def decode_assets(value: object) -> tuple[Address, ...]:
    """A state's asset addresses (1..MAX_ASSETS of 20 bytes each)."""
    if type(value) is not tuple or not 0 < len(value) <= MAX_ASSETS:
        raise DecodeError(f"assets must be a list of 1..{MAX_ASSETS} addresses")
    for asset in value:
        if type(asset) is not bytes or len(asset) != 20:
            raise DecodeError("an asset is a 20-byte address")
    return value


def decode_balances(value: object, n_assets: int) -> tuple[tuple[int, int], ...]:
    """A state's balance rows, one per asset, two amounts each."""
    if type(value) is not tuple or len(value) != n_assets:
        raise DecodeError("balances must hold one row per asset")
    rows = []
    for row in value:
        if type(row) is not tuple or len(row) != 2:
            raise DecodeError("a balance row has two amounts")
        rows.append((decode_big(row[0], "balance"), decode_big(row[1], "balance")))
    return tuple(rows)


def decode_locked(value: object, n_assets: int) -> tuple[SubAlloc, ...]:
    """A state's sub-allocations (the trailing locks field; never empty)."""
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
                ChannelID(decode_bytes(channel, 32, "locked channel ID")),
                tuple(decode_big(amount, "locked amount") for amount in amounts),
                index_map,
            )
        )
    if len({lock.channel_id for lock in locks}) != len(locks):
        raise DecodeError("a virtual channel is locked at most once")
    return tuple(locks)


def decode_state(body: tuple[Any, ...], trailing: tuple[Any, ...] = ()) -> State:
    """The State in `body[:5]`; `trailing` is the message's optional last field, the locks
    (`()` when absent)."""
    channel, version, assets, balances, is_final = body[:5]
    checked_assets = decode_assets(assets)
    if type(is_final) is not bool:
        raise DecodeError("is_final must be a bool")
    locks = decode_locked(trailing[0], len(checked_assets)) if trailing else ()
    try:
        return State(
            ChannelID(decode_bytes(channel, 32, "channel ID")),
            decode_uint64(version, "version"),
            checked_assets,
            decode_balances(balances, len(checked_assets)),
            is_final,
            locks,
        )
    except ValueError as exc:  # pragma: no cover - the checks above cover State's own rules
        raise DecodeError(f"invalid state: {exc}") from exc


def decode_memo(value: object, n_assets: int) -> Memo:
    """An update's memo, the map `{"m": [[amounts, request, reference], ...]}`."""
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
        decoded.append(PaymentPart(decode_amounts(amounts), request, reference))
    return tuple(decoded)


def decode_amounts(amounts: tuple[Any, ...]) -> tuple[int, ...]:
    """`decode_big` of each of `amounts`, inlined: a peer's memo may carry 256 parts of 16
    amounts in one frame, and a call each was a third of its decoding."""
    for amount in amounts:
        if type(amount) is not bytes or len(amount) > 32 or (amount and amount[0] == 0):
            raise DecodeError("memo amount must be a minimal big-endian uint256")
    return tuple([int.from_bytes(amount, "big") for amount in amounts])
