"""Byte-exact ABI encoding, hashing, signing and recovery of channel data
(docs/specification.md §1).

The encoders are hand-written for the two fixed shapes (Params and State) because the generic
`eth_abi.encode` costs ~50 µs a state, a large share of one payment's budget; tests prove them
identical to `eth_abi` and to the deployed contract. Signing uses coincurve (libsecp256k1).
"""

from __future__ import annotations

import os

import coincurve
import sha3  # safe-pysha3: a C keccak, ~4x faster than eth_hash's pycryptodome backend
from coincurve._libsecp256k1 import ffi as _ffi
from coincurve._libsecp256k1 import lib as _lib
from coincurve.context import GLOBAL_CONTEXT as _SECP_CONTEXT

from perund.channel.types import (
    Address,
    ChannelID,
    Params,
    Signature,
    State,
    SubAlloc,
    VirtualParams,
)

_SIGNED_PREFIX = b"\x19Ethereum Signed Message:\n32"
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = _SECP256K1_N // 2
_PAD12 = b"\x00" * 12
_WORD_ZERO = b"\x00" * 32
_WORD_ONE = (1).to_bytes(32, "big")


def keccak(data: bytes) -> bytes:
    """keccak256 of `data` (the hash Ethereum calls sha3)."""
    return sha3.keccak_256(data).digest()  # type: ignore[no-any-return]


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def encode_params(params: Params) -> bytes:
    """`abi.encode(params)` of the static tuple (uint64, uint256, address[2], address[2])."""
    p0, p1 = params.participants
    r0, r1 = params.receivers
    return b"".join(
        (
            _word(params.challenge_duration),
            _word(params.nonce),
            _PAD12 + p0,
            _PAD12 + p1,
            _PAD12 + r0,
            _PAD12 + r1,
        )
    )


def channel_id(chain_id: int, adjudicator: Address, params: Params) -> ChannelID:
    """`keccak256(abi.encode(block.chainid, adjudicator, params))`: domain-separated (§1.3)."""
    return ChannelID(keccak(_word(chain_id) + _PAD12 + adjudicator + encode_params(params)))


def encode_virtual_params(params: VirtualParams) -> bytes:
    """`abi.encode(vp)` of the static tuple (uint64, uint256, address[2], bytes32[2])."""
    p0, p1 = params.participants
    l0, l1 = params.parents
    return b"".join(
        (_word(params.challenge_duration), _word(params.nonce), _PAD12 + p0, _PAD12 + p1, l0, l1)
    )


def virtual_channel_id(chain_id: int, adjudicator: Address, params: VirtualParams) -> ChannelID:
    """`keccak256(abi.encode(block.chainid, adjudicator, vp, uint256(1)))`: one word longer than
    a ledger channel's preimage, so no virtual ID equals a ledger ID."""
    return ChannelID(
        keccak(_word(chain_id) + _PAD12 + adjudicator + encode_virtual_params(params) + _WORD_ONE)
    )


def nonce_from_shares(share0: bytes, share1: bytes) -> int:
    """The channel nonce from both sides' random 32-byte shares (§1.2)."""
    if len(share0) != 32 or len(share1) != 32:
        raise ValueError("nonce shares have 32 bytes")
    return int.from_bytes(keccak(share0 + share1), "big")


def random_share() -> bytes:
    """A fresh random 32-byte nonce share (or proposal ID)."""
    return os.urandom(32)


def encode_state(state: State) -> bytes:
    """`abi.encode(state)` for State = (bytes32, uint64, address[], uint256[][], bool)."""
    n_assets = len(state.assets)
    parts: list[bytes] = [_word(0x20), state.channel_id, _word(state.version)]
    assets_offset = 5 * 32
    balances_offset = assets_offset + 32 * (1 + n_assets)
    parts.append(_word(assets_offset))
    parts.append(_word(balances_offset))
    parts.append(_WORD_ONE if state.is_final else _WORD_ZERO)
    parts.append(_word(n_assets))
    parts.extend(_PAD12 + asset for asset in state.assets)
    parts.append(_word(n_assets))
    inner_offset = 32 * n_assets
    for row in state.balances:
        parts.append(_word(inner_offset))
        inner_offset += 32 * (1 + len(row))
    for row in state.balances:
        parts.append(_word(len(row)))
        parts.extend(_word(amount) for amount in row)
    return b"".join(parts)


def encode_locked(locked: tuple[SubAlloc, ...]) -> bytes:
    """`abi.encode(locked)`, SubAlloc[] being (bytes32 id, uint256[] balances, uint8[2] map)[]."""
    parts: list[bytes] = [_word(0x20), _word(len(locked))]
    offset = 32 * len(locked)
    for lock in locked:
        parts.append(_word(offset))
        offset += 32 * (5 + len(lock.balances))
    for lock in locked:
        parts.append(lock.channel_id)
        parts.append(_word(0x80))
        parts.append(_word(lock.index_map[0]))
        parts.append(_word(lock.index_map[1]))
        parts.append(_word(len(lock.balances)))
        parts.extend(_word(amount) for amount in lock.balances)
    return b"".join(parts)


def state_hash(state: State) -> bytes:
    """What the contract stores for a registered state and what participants sign.

    `keccak256(abi.encode(state))` without locks (the five ABI fields of `State`); with locks,
    `keccak256(abi.encode(keccak256(abi.encode(state)), keccak256(abi.encode(locked))))`.
    """
    plain = keccak(encode_state(state))
    if not state.locked:
        return plain
    return keccak(plain + keccak(encode_locked(state.locked)))


def signing_digest(state: State) -> bytes:
    """The EIP-191 digest a participant signs for `state`."""
    return keccak(_SIGNED_PREFIX + state_hash(state))


class Signer:
    """Signs channel states and handshakes with one secp256k1 key (coincurve)."""

    __slots__ = ("_key", "address")

    def __init__(self, private_key: bytes) -> None:
        self._key = coincurve.PrivateKey(private_key)
        self.address = address_of_public_key(self._key.public_key.format(compressed=False))

    def sign_digest(self, digest: bytes) -> Signature:
        """A 65-byte `r ‖ s ‖ v` signature over a 32-byte digest (v ∈ {27, 28}, low s)."""
        raw = self._key.sign_recoverable(digest, hasher=None)
        return Signature(raw[:64] + bytes((raw[64] + 27,)))

    def sign_state(self, state: State) -> Signature:
        """Sign `state` as docs/specification.md §1.5 says."""
        return self.sign_digest(signing_digest(state))

    def __repr__(self) -> str:
        return f"Signer(0x{self.address.hex()})"


def address_of_public_key(uncompressed: bytes) -> Address:
    """The Ethereum address of a 65-byte uncompressed public key."""
    return Address(keccak(uncompressed[1:])[-20:])


_KNOWN_SIGNERS: dict[bytes, Address] = {}
"""The address of each public key recovered lately, by libsecp256k1's 64-byte form of it (the
same within one process): a payee recovers its payer's key on every payment."""

_KNOWN_SIGNERS_MAX = 4096
"""Past this many keys the map starts again (a peer can make us recover any number of keys)."""


def recover_digest(digest: bytes, signature: bytes) -> Address:
    """The signer of `digest`; ValueError for a malformed or high-s signature.

    libsecp256k1 is called directly, as coincurve's `PublicKey.from_signature_and_message`
    does, without its wrapper's objects, and a key recovered before is not serialized and
    hashed again: about 2.5 µs less of a ~30 µs recovery (docs/performance.md). That binding
    is not coincurve's public API: its version is pinned (constraints.txt), and the tests check
    recoveries against eth-account's."""
    if len(digest) != 32:
        raise ValueError("a digest has 32 bytes")
    if len(signature) != 65:
        raise ValueError("a signature has 65 bytes")
    v = signature[64]
    if v not in (27, 28):
        raise ValueError("signature v must be 27 or 28")
    s = int.from_bytes(signature[32:64], "big")
    r = int.from_bytes(signature[:32], "big")
    if not 0 < s <= _HALF_N or not 0 < r < _SECP256K1_N:
        raise ValueError("signature r or s out of range (high s is refused)")
    context = _SECP_CONTEXT.ctx
    parsed = _ffi.new("secp256k1_ecdsa_recoverable_signature *")
    public = _ffi.new("secp256k1_pubkey *")
    if not (_lib.secp256k1_ecdsa_recoverable_signature_parse_compact(
                context, parsed, signature[:64], v - 27)
            and _lib.secp256k1_ecdsa_recover(context, public, parsed, digest)):
        raise ValueError("signature does not recover to a public key")
    key = bytes(_ffi.buffer(public, 64))
    address = _KNOWN_SIGNERS.get(key)
    if address is None:
        serialized = _ffi.new("unsigned char[65]")
        size = _ffi.new("size_t *", 65)
        _lib.secp256k1_ec_pubkey_serialize(context, serialized, size, public,
                                           _lib.SECP256K1_EC_UNCOMPRESSED)
        address = address_of_public_key(bytes(_ffi.buffer(serialized, 65)))
        if len(_KNOWN_SIGNERS) >= _KNOWN_SIGNERS_MAX:
            _KNOWN_SIGNERS.clear()
        _KNOWN_SIGNERS[key] = address
    return address


def recover_state_signer(state: State, signature: bytes) -> Address:
    """The address that signed `state`; ValueError for a malformed signature."""
    return recover_digest(signing_digest(state), signature)


def verify_state(state: State, signature: bytes, signer: Address) -> bool:
    """Whether `signature` is `signer`'s valid signature on `state`."""
    try:
        return recover_state_signer(state, signature) == signer
    except ValueError:
        return False
