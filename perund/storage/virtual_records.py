"""What an intermediary keeps of each virtual channel it funds: the store's meta records
`virtual:<channel ID hex>` (docs/storage.md).

An intermediary is no participant of the virtual channels it locks funds for, so they are no
channels of its own; to dispute or conclude its ledgers it needs each one's params, the latest
state both parties signed that it holds (version 0 from the locks, the final state from the
folds) and, once the channel is registered on-chain, the registered state and its timeout.

Format: `format version (1 byte) ‖ msgpack [params, state, signature0, signature1,
registration]`, params = `[challenge_duration, nonce, participant0, participant1, parent0,
parent1]`, state as in a channel record (`perund.storage.codec`), registration = nil or
`[state, timeout]`. Decoding is strict (`StoreCorrupt` naming the field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgpack

from perund.channel.types import (
    Address,
    ChannelID,
    Signature,
    State,
    VirtualParams,
    VirtualProof,
)
from perund.errors import StoreCorrupt
from perund.storage import codec

PREFIX: Final = "virtual:"
"""The meta names of these records: `virtual:<channel ID in hex>`."""

FORMAT_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class VirtualRecord:
    """An intermediary's record of one virtual channel (module doc)."""

    proof: VirtualProof
    registration: tuple[State, int] | None = None
    """The state registered on-chain and its timeout, once it is."""

    @property
    def channel_id(self) -> ChannelID:
        """The virtual channel's ID."""
        return self.proof.state.channel_id


def record_name(channel_id: ChannelID) -> str:
    """The meta name of a virtual channel's record."""
    return PREFIX + channel_id.hex()


def encode_record(record: VirtualRecord) -> bytes:
    """The stored bytes of `record` (StoreError for what the format cannot hold)."""
    proof = record.proof
    vp = proof.params
    vid = proof.state.channel_id
    params = (codec._e_uint64(vp.challenge_duration, "challenge duration"),
              codec._e_big(vp.nonce), codec._e_bytes(vp.participants[0], 20, "participant"),
              codec._e_bytes(vp.participants[1], 20, "participant"),
              codec._e_bytes(vp.parents[0], 32, "parent"),
              codec._e_bytes(vp.parents[1], 32, "parent"))
    registration = None
    if record.registration is not None:
        state, timeout = record.registration
        registration = (codec._e_state(state, vid), codec._e_uint64(timeout, "timeout"))
    body = (params, codec._e_state(proof.state, vid),
            codec._e_bytes(proof.signatures[0], 65, "signature"),
            codec._e_bytes(proof.signatures[1], 65, "signature"), registration)
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return bytes((FORMAT_VERSION,)) + packed


def decode_record(value: bytes, channel_id: ChannelID) -> VirtualRecord:
    """The record of virtual channel `channel_id` stored in `value`; StoreCorrupt if it is
    not a valid one."""
    if not value or value[0] != FORMAT_VERSION:
        raise StoreCorrupt("virtual channel record has an unknown format version")
    try:
        body = msgpack.unpackb(value[1:], raw=False, use_list=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise StoreCorrupt(f"virtual channel record is not valid msgpack: {exc}") from None
    params, state, sig0, sig1, registration = codec._d_tuple(body, 5, "virtual channel record")
    p = codec._d_tuple(params, 6, "virtual params")
    try:
        vp = VirtualParams(
            codec._d_uint64(p[0], "challenge duration"), codec._d_big(p[1], "nonce"),
            (Address(codec._d_bytes(p[2], 20, "participant")),
             Address(codec._d_bytes(p[3], 20, "participant"))),
            (ChannelID(codec._d_bytes(p[4], 32, "parent")),
             ChannelID(codec._d_bytes(p[5], 32, "parent"))))
        proof = VirtualProof(vp, codec._d_state(state, channel_id, "virtual state"),
                             (Signature(codec._d_bytes(sig0, 65, "signature")),
                              Signature(codec._d_bytes(sig1, 65, "signature"))))
        registered = None
        if registration is not None:
            r = codec._d_tuple(registration, 2, "registration")
            registered = (codec._d_state(r[0], channel_id, "registered state"),
                          codec._d_uint64(r[1], "timeout"))
    except (ValueError, TypeError, IndexError) as exc:
        raise StoreCorrupt(f"virtual channel record is inconsistent: {exc}") from None
    if proof.state.channel_id != channel_id or proof.state.locked:
        raise StoreCorrupt("virtual channel record holds another channel's state")
    return VirtualRecord(proof, registered)
