"""The byte format of store records: channels, contacts and the block cursor (docs/storage.md).

A record value is `format version (1 byte) ‖ msgpack body`. Channel bodies are msgpack arrays
(positional, no field names); integers that may exceed 64 bits (wei amounts, the channel nonce)
are minimal big-endian byte strings, zero being the empty string. A state inside a channel
record stores its channel ID as nil when it equals the record's (it always does in practice),
which saves 32 bytes per state. A state's locks (sub-allocations for virtual channels) are a sixth
field present only when it has some, so lock-free states keep their old bytes.

Only the durable fields of `records.Channel` are stored (docs/core.md): `sync_sent` and
`fresh_link` come back as their defaults, and the core's `Restored` input resets
them anyway. `staged` is stored whichever side proposed it: after a restart the core turns ours
into `abandoned` and answers the peer's with a reject, which it can only do if it is there.

Decoding is strict (one type and one length per field, canonical integers, nothing after the
body) and raises `StoreCorrupt` with a message naming the field; the store adds the file and the
key. Encoding a value the format cannot hold raises `StoreError`: a bug, never written.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Final

import msgpack

from perund.channel.phases import Phase
from perund.channel.records import Channel, Dispute, SignedState, Staged
from perund.channel.types import (
    MAX_ASSETS,
    MAX_SUB_ALLOCS,
    UINT64_MAX,
    UINT256_MAX,
    Address,
    ChannelID,
    Params,
    Signature,
    State,
    SubAlloc,
    VirtualParams,
)
from perund.errors import StoreCorrupt, StoreError

FORMAT_VERSION: Final = 1
"""First byte of every record value written by this code; any other first byte is refused."""


MAX_UPDATE_ID: Final = 64
"""Longest update ID, in bytes (the core uses the 32-byte digest or nothing)."""

MAX_CONTACT_FIELDS: Final = 32
MAX_CONTACT_TEXT: Final = 1024
"""Limits on a contact record: field count and the length of each name and value."""

# Phase codes. Never reuse or renumber one: stored records and golden vectors pin them.
PHASE_CODES: Final[dict[Phase, int]] = {
    Phase.PROPOSING: 0,
    Phase.FUNDING: 1,
    Phase.OPEN: 2,
    Phase.UPDATING: 3,
    Phase.CLOSING: 4,
    Phase.DISPUTED: 5,
    Phase.CLOSED: 6,
    Phase.CHAIN_LOST: 7,
}
_PHASES: Final[dict[int, Phase]] = {code: phase for phase, code in PHASE_CODES.items()}


class _PackerPerThread(threading.local):
    """One reusable Packer per thread (a Packer keeps an internal buffer, so it is not shared)."""

    def __init__(self) -> None:
        self.packer = msgpack.Packer(use_bin_type=True, autoreset=True)


_packers = _PackerPerThread()
_VERSION_BYTE: Final = bytes([FORMAT_VERSION])


def _pack(body: object) -> bytes:
    return _VERSION_BYTE + pack(body)


def pack(body: object) -> bytes:
    """`body` as msgpack with bin types (what `msgpack.packb(body, use_bin_type=True)` gives),
    through this thread's reusable Packer: a new Packer per call costs more than the packing."""
    packed: bytes = _packers.packer.pack(body)
    return packed


def _unpack(value: bytes, what: str) -> Any:
    if not value:
        raise StoreCorrupt(f"empty {what} record")
    if value[0] != FORMAT_VERSION:
        raise StoreCorrupt(f"{what} record has format version {value[0]}, not {FORMAT_VERSION}")
    try:
        return msgpack.unpackb(
            memoryview(value)[1:], raw=False, use_list=False, strict_map_key=True
        )
    except Exception as e:  # msgpack raises several unrelated types for bad input
        raise StoreCorrupt(f"{what} record is not valid msgpack: {e}") from None


# --------------------------------------------------------------------------------------------
# Encoding. The hot path: one call per Persist, so plain checks and no helper objects.


def _e_big(value: int) -> bytes:
    if type(value) is not int or not 0 <= value <= UINT256_MAX:
        raise StoreError("wei amounts and nonces must be ints in 0..2**256-1")
    return value.to_bytes((value.bit_length() + 7) >> 3, "big")


def _e_uint64(value: int, what: str) -> int:
    if type(value) is not int or not 0 <= value <= UINT64_MAX:
        raise StoreError(f"{what} must be an int in 0..2**64-1")
    return value


def _e_bytes(value: bytes, size: int, what: str) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise StoreError(f"{what} must be {size} bytes")
    return value


def _e_flag(value: object, what: str) -> object:
    # Participant indexes (0/1) and bools: both are msgpack scalars that decode strictly.
    if value not in (0, 1):
        raise StoreError(f"{what} must be 0/1 or a bool")
    return value


def _e_locked(locked: object, n_assets: int) -> tuple[Any, ...]:
    if type(locked) is not tuple or len(locked) > MAX_SUB_ALLOCS:
        raise StoreError(f"locked must be a tuple of at most {MAX_SUB_ALLOCS} sub-allocations")
    out = []
    for lock in locked:
        if type(lock) is not SubAlloc:
            raise StoreError("a lock must be a SubAlloc")
        if type(lock.balances) is not tuple or len(lock.balances) != n_assets:
            raise StoreError("a lock holds one amount per asset")
        index_map = lock.index_map
        if index_map not in ((0, 1), (1, 0)) or any(type(i) is not int for i in index_map):
            raise StoreError("an index map is (0, 1) or (1, 0)")
        out.append(
            (
                _e_bytes(lock.channel_id, 32, "locked channel ID"),
                tuple(_e_big(amount) for amount in lock.balances),
                index_map,
            )
        )
    if len({entry[0] for entry in out}) != len(out):
        raise StoreError("a virtual channel is locked at most once")
    return tuple(out)


def _e_state(state: State, channel_id: bytes) -> tuple[Any, ...]:
    assets = state.assets
    if len(assets) > MAX_ASSETS:
        raise StoreError(f"a stored state holds at most {MAX_ASSETS} assets")
    for asset in assets:
        _e_bytes(asset, 20, "asset")
    if type(state.is_final) is not bool:
        raise StoreError("is_final must be a bool")
    body = (
        None if state.channel_id == channel_id else state.channel_id,
        _e_uint64(state.version, "version"),
        assets,
        tuple((_e_big(row[0]), _e_big(row[1])) for row in state.balances),
        state.is_final,
    )
    if not state.locked:
        # Without locks a state is stored exactly as before they existed.
        return body
    return (*body, _e_locked(state.locked, len(assets)))


def _e_staged(staged: Staged | None, channel_id: bytes) -> tuple[Any, ...] | None:
    if staged is None:
        return None
    if type(staged.update_id) is not bytes or len(staged.update_id) > MAX_UPDATE_ID:
        raise StoreError(f"an update ID is at most {MAX_UPDATE_ID} bytes")
    if type(staged.proposer) is not int:
        raise StoreError("the proposer is a participant index")
    return (
        _e_flag(staged.proposer, "proposer"),
        _e_state(staged.state, channel_id),
        _e_bytes(staged.signature, 65, "signature"),
        _e_bytes(staged.digest, 32, "digest"),
        staged.update_id,
    )


def _e_params(params: Params | VirtualParams) -> tuple[Any, ...]:
    """A ledger channel's params as 6 fields; a virtual channel's as 5, its parents last."""
    head = (_e_uint64(params.challenge_duration, "challenge duration"), _e_big(params.nonce),
            *params.participants)
    if type(params) is VirtualParams:
        return (*head, (_e_bytes(params.parents[0], 32, "parent"),
                        _e_bytes(params.parents[1], 32, "parent")))
    if type(params) is not Params:
        raise StoreError("params must be Params or VirtualParams")
    return (*head, *params.receivers)


def _e_signed(signed: SignedState, channel_id: bytes) -> tuple[Any, ...]:
    return (
        _e_state(signed.state, channel_id),
        _e_bytes(signed.signatures[0], 65, "signature"),
        _e_bytes(signed.signatures[1], 65, "signature"),
    )


def encode_channel(channel: Channel) -> bytes:
    """The record value of `channel`'s durable fields."""
    cid = _e_bytes(channel.channel_id, 32, "channel ID")
    params = channel.params
    current = channel.current
    dispute = channel.dispute
    if type(channel.index) is not int or type(channel.confirm_updates) is not bool:
        raise StoreError("index must be an int and confirm_updates a bool")
    body: tuple[object, ...] = (
        cid,
        _e_params(params),
        _e_flag(channel.index, "index"),
        PHASE_CODES[channel.phase],
        None if current is None else _e_signed(current, cid),
        _e_staged(channel.staged, cid),
        _e_staged(channel.abandoned, cid),
        channel.confirm_updates,
        None
        if dispute is None
        else (
            _e_uint64(dispute.version, "dispute version"),
            _e_uint64(dispute.timeout, "dispute timeout"),
            _e_state(dispute.state, cid),
        ),
        _e_uint64(channel.signed_up_to, "signed_up_to"),
    )
    checked = channel.checked
    funding = channel.funding
    later = checked is not None or funding is not None
    if channel.reserved != channel.signed_up_to or channel.unfunded or later:
        # Stored only when it differs from `signed_up_to` (or a later field follows), so that
        # records without a reservation keep their bytes (docs/storage.md).
        body = (*body, _e_uint64(channel.reserved, "reserved"))
    if type(channel.unfunded) is not bool:
        raise StoreError("unfunded must be a bool")
    if channel.unfunded or later:
        body = (*body, channel.unfunded)
    if later:
        body = (*body, None if checked is None else _e_signed(checked, cid))
    if funding is not None:
        if current is None or len(funding) != len(current.state.assets) \
                or any(len(row) != 2 for row in funding):
            raise StoreError("funding must hold two balances per asset of the current state")
        body = (*body, tuple((_e_big(row[0]), _e_big(row[1])) for row in funding))
    return _pack(body)


# --------------------------------------------------------------------------------------------
# Decoding: every field checked; anything unexpected is StoreCorrupt naming the field.


def _d_tuple(value: object, size: int, what: str) -> tuple[Any, ...]:
    if type(value) is not tuple or len(value) != size:
        raise StoreCorrupt(f"{what} must be an array of {size}")
    return value


def _d_bytes(value: object, size: int, what: str) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise StoreCorrupt(f"{what} must be {size} bytes")
    return value


def _d_address(value: object, what: str) -> Address:
    return Address(_d_bytes(value, 20, what))


def _d_uint64(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= UINT64_MAX:
        raise StoreCorrupt(f"{what} must be an int in 0..2**64-1")
    return value


def _d_big(value: object, what: str) -> int:
    if type(value) is not bytes or len(value) > 32 or value[:1] == b"\x00":
        raise StoreCorrupt(f"{what} must be a minimal big-endian integer of at most 32 bytes")
    return int.from_bytes(value, "big")


def _d_bool(value: object, what: str) -> bool:
    if type(value) is not bool:
        raise StoreCorrupt(f"{what} must be a bool")
    return value


def _d_index(value: object, what: str) -> int:
    if type(value) is not int or value not in (0, 1):
        raise StoreCorrupt(f"{what} must be 0 or 1")
    return value


def _d_locked(value: object, n_assets: int, what: str) -> tuple[SubAlloc, ...]:
    # Present only when non-empty: an empty array would be a second encoding of "no locks".
    if type(value) is not tuple or not 0 < len(value) <= MAX_SUB_ALLOCS:
        raise StoreCorrupt(f"{what} locks must be an array of 1..{MAX_SUB_ALLOCS}")
    locks = []
    for entry in value:
        channel, amounts, index_map = _d_tuple(entry, 3, f"{what} lock")
        if type(amounts) is not tuple or len(amounts) != n_assets:
            raise StoreCorrupt(f"{what} lock must hold one amount per asset")
        if index_map not in ((0, 1), (1, 0)) or any(type(i) is not int for i in index_map):
            raise StoreCorrupt(f"{what} lock index map must be [0, 1] or [1, 0]")
        locks.append(
            SubAlloc(
                ChannelID(_d_bytes(channel, 32, f"{what} locked channel ID")),
                tuple(_d_big(amount, f"{what} locked amount") for amount in amounts),
                index_map,
            )
        )
    if len({lock.channel_id for lock in locks}) != len(locks):
        raise StoreCorrupt(f"{what} locks a virtual channel twice")
    return tuple(locks)


def _d_state(value: object, channel_id: ChannelID, what: str) -> State:
    if type(value) is not tuple or len(value) not in (5, 6):
        raise StoreCorrupt(f"{what} must be an array of 5 (6 with locks)")
    body = value
    cid = channel_id if body[0] is None else ChannelID(_d_bytes(body[0], 32, f"{what} ID"))
    assets = body[2]
    if type(assets) is not tuple or not 0 < len(assets) <= MAX_ASSETS:
        raise StoreCorrupt(f"{what} assets must be an array of 1..{MAX_ASSETS}")
    balances = body[3]
    if type(balances) is not tuple or len(balances) != len(assets):
        raise StoreCorrupt(f"{what} balances must hold one row per asset")
    rows = tuple(
        (_d_big(row[0], f"{what} balance"), _d_big(row[1], f"{what} balance"))
        for row in (_d_tuple(r, 2, f"{what} balance row") for r in balances)
    )
    return State(
        cid,
        _d_uint64(body[1], f"{what} version"),
        tuple(_d_address(a, f"{what} asset") for a in assets),
        rows,
        _d_bool(body[4], f"{what} is_final"),
        () if len(body) == 5 else _d_locked(body[5], len(assets), what),
    )


def _d_staged(value: object, channel_id: ChannelID, what: str) -> Staged | None:
    if value is None:
        return None
    body = _d_tuple(value, 5, what)
    update_id = body[4]
    if type(update_id) is not bytes or len(update_id) > MAX_UPDATE_ID:
        raise StoreCorrupt(f"{what} update ID must be at most {MAX_UPDATE_ID} bytes")
    return Staged(
        _d_index(body[0], f"{what} proposer"),
        _d_state(body[1], channel_id, f"{what} state"),
        Signature(_d_bytes(body[2], 65, f"{what} signature")),
        _d_bytes(body[3], 32, f"{what} digest"),
        update_id,
    )


def _d_signed(value: object, channel_id: ChannelID, what: str) -> SignedState:
    body = _d_tuple(value, 3, what)
    return SignedState(
        _d_state(body[0], channel_id, f"{what} state"),
        (
            Signature(_d_bytes(body[1], 65, f"{what} signature")),
            Signature(_d_bytes(body[2], 65, f"{what} signature")),
        ),
    )


def _d_params(value: object) -> Params | VirtualParams:
    if type(value) is tuple and len(value) == 5:
        parents = _d_tuple(value[4], 2, "parents")
        return VirtualParams(
            _d_uint64(value[0], "challenge duration"),
            _d_big(value[1], "nonce"),
            (_d_address(value[2], "participant"), _d_address(value[3], "participant")),
            (ChannelID(_d_bytes(parents[0], 32, "parent")),
             ChannelID(_d_bytes(parents[1], 32, "parent"))),
        )
    p = _d_tuple(value, 6, "params")
    return Params(
        _d_uint64(p[0], "challenge duration"),
        _d_big(p[1], "nonce"),
        (_d_address(p[2], "participant"), _d_address(p[3], "participant")),
        (_d_address(p[4], "receiver"), _d_address(p[5], "receiver")),
    )


def _d_funding(value: object, current: SignedState | None) -> tuple[tuple[int, ...], ...]:
    if current is None or type(value) is not tuple or len(value) != len(current.state.assets):
        raise StoreCorrupt("funding must hold one row of deposits per asset of the current "
                           "state")
    return tuple(tuple(_d_big(amount, "deposit") for amount in _d_tuple(row, 2, "deposits"))
                 for row in value)


def decode_channel(value: bytes) -> Channel:
    """The channel stored in `value`; `StoreCorrupt` if it is not a valid channel record."""
    body = _unpack(value, "channel")
    if type(body) is tuple and len(body) == 9:
        # Written before `signed_up_to` existed: every state we signed is still on record.
        body = (*body, None)
    # A record without a reservation has none beyond `signed_up_to` (or was written before
    # reservations, when every write was durable before a signature it records left).
    reserved_field = None
    unfunded = False
    checked_field: object = None
    funding_field: object = None
    if type(body) is tuple and len(body) in (11, 12, 13, 14):
        reserved_field = _d_uint64(body[10], "reserved")
        if len(body) >= 12:
            unfunded = _d_bool(body[11], "unfunded")
        if len(body) >= 13:
            checked_field = body[12]
            if checked_field is None and len(body) == 13:
                raise StoreCorrupt("a thirteenth field is written only with a checked state")
        elif unfunded is not True and len(body) == 12:
            raise StoreCorrupt("a twelfth field is written only for an unfunded channel")
        if len(body) == 14:
            funding_field = body[13]
            if funding_field is None:
                raise StoreCorrupt("a fourteenth field is written only with a channel's deposits")
        body = body[:10]
    elif type(body) is not tuple or len(body) != 10:
        raise StoreCorrupt("channel record must be an array of 10 (11 with a reservation, 12 "
                           "with the unfunded flag, 13 with a checked state, 14 with the "
                           "deposits of a channel paid in while funding)")
    try:
        cid = ChannelID(_d_bytes(body[0], 32, "channel ID"))
        params = _d_params(body[1])
        phase = _PHASES.get(body[3]) if type(body[3]) is int else None
        if phase is None:
            raise StoreCorrupt(f"unknown phase code {body[3]!r}")
        current = None if body[4] is None else _d_signed(body[4], cid, "current")
        checked = None if checked_field is None else _d_signed(checked_field, cid, "checked")
        funding = None if funding_field is None else _d_funding(funding_field, current)
        if checked is not None and (current is None or checked.state.version
                                    >= current.state.version):
            raise StoreCorrupt("the checked state must be older than the current one")
        dispute = None
        if body[8] is not None:
            d = _d_tuple(body[8], 3, "dispute")
            dispute = Dispute(
                _d_uint64(d[0], "dispute version"),
                _d_uint64(d[1], "dispute timeout"),
                _d_state(d[2], cid, "dispute state"),
            )
        index = _d_index(body[2], "index")
        staged = _d_staged(body[5], cid, "staged")
        abandoned = _d_staged(body[6], cid, "abandoned")
        if body[9] is None:
            signed_up_to = max(
                [0 if current is None else current.state.version]
                + [s.state.version for s in (staged, abandoned) if s and s.proposer == index]
            )
        else:
            signed_up_to = _d_uint64(body[9], "signed_up_to")
        reserved = signed_up_to if reserved_field is None else reserved_field
        return Channel(
            channel_id=cid,
            params=params,
            index=index,
            phase=phase,
            current=current,
            staged=staged,
            abandoned=abandoned,
            confirm_updates=_d_bool(body[7], "confirm_updates"),
            dispute=dispute,
            signed_up_to=signed_up_to,
            reserved=reserved,
            unfunded=unfunded,
            checked=checked,
            funding=funding,
        )
    except (ValueError, TypeError, IndexError) as e:
        # The dataclasses' own checks (participants differ, balances are uint256, ...).
        raise StoreCorrupt(f"channel record is inconsistent: {e}") from None


# --------------------------------------------------------------------------------------------
# Small records: contacts added at run time and the watcher's block cursor.


def encode_contact(record: Mapping[str, str]) -> bytes:
    """The record value of a contact: a map of field name to text (the contacts module's
    fields, e.g. `off_chain_address`, `comm_address`, `comm_type`)."""
    if len(record) > MAX_CONTACT_FIELDS:
        raise StoreError(f"a contact has at most {MAX_CONTACT_FIELDS} fields")
    for name, text in record.items():
        if type(name) is not str or type(text) is not str:
            raise StoreError("contact fields are text")
        if len(name) > MAX_CONTACT_TEXT or len(text) > MAX_CONTACT_TEXT:
            raise StoreError(f"contact fields are at most {MAX_CONTACT_TEXT} characters")
    return _pack(dict(record))


def decode_contact(value: bytes) -> dict[str, str]:
    """The contact stored in `value`; `StoreCorrupt` if it is not a valid contact record."""
    body = _unpack(value, "contact")
    if type(body) is not dict or len(body) > MAX_CONTACT_FIELDS:
        raise StoreCorrupt(f"contact record must be a map of at most {MAX_CONTACT_FIELDS} fields")
    for name, text in body.items():
        if type(name) is not str or type(text) is not str:
            raise StoreCorrupt("contact record fields must be text")
    return body


def encode_cursor(block: int, block_hash: bytes | None = None) -> bytes:
    """The record value of the watcher's block cursor and, if known, that block's hash (to
    notice a reorganisation that replaced it)."""
    if block_hash is None:
        return _pack(_e_uint64(block, "block cursor"))
    return _pack((_e_uint64(block, "block cursor"), _e_bytes(block_hash, 32, "block hash")))


def decode_cursor(value: bytes) -> tuple[int, bytes | None]:
    """The block cursor and its block's hash (None in records written without one) stored in
    `value`; `StoreCorrupt` if it is not a valid cursor record."""
    body = _unpack(value, "cursor")
    if type(body) is int:
        return _d_uint64(body, "block cursor"), None
    block, block_hash = _d_tuple(body, 2, "cursor record")
    return _d_uint64(block, "block cursor"), _d_bytes(block_hash, 32, "block hash")
