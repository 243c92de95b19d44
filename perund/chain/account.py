"""On-chain accounts: an address plus a local transaction signer (coincurve, libsecp256k1).

Transactions are signed here and sent raw, so the same code works on the embedded chain, anvil,
geth or a hosted node, none of which ever sees a key. The node sends EIP-1559 (type 2)
transactions only; their encoding (EIP-2718 envelope, RLP) is written out here rather than
imported from eth-account, whose import costs a node start ~0.5 s.
"""

from __future__ import annotations

from dataclasses import dataclass

from perund.channel.encoding import Signer, keccak
from perund.channel.types import Address, hex_address

_UINT256_LIMIT = 1 << 256
_TYPE_EIP1559 = b"\x02"

RlpItem = bytes | list["RlpItem"]


def _rlp_length(length: int, short_offset: int) -> bytes:
    if length < 56:
        return bytes([short_offset + length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([short_offset + 55 + len(size)]) + size


def rlp_encode(item: RlpItem) -> bytes:
    """The RLP encoding of a byte string or a (nested) list of them (Yellow Paper, app. B)."""
    if isinstance(item, bytes):
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _rlp_length(len(item), 0x80) + item
    payload = b"".join(rlp_encode(element) for element in item)
    return _rlp_length(len(payload), 0xC0) + payload


def _scalar(value: int, name: str) -> bytes:
    """An unsigned integer field: big-endian without leading zeros (zero is empty)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _UINT256_LIMIT:
        raise ValueError(f"transaction field {name} must be an integer in 0..2**256-1")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


@dataclass(frozen=True, slots=True)
class Eip1559Transaction:
    """An EIP-1559 (type 2) transaction without an access list; `to` None creates a contract."""

    chain_id: int
    nonce: int
    max_priority_fee_per_gas: int
    max_fee_per_gas: int
    gas: int
    to: Address | None
    value: int
    data: bytes

    def fields(self) -> list[RlpItem]:
        """The nine signed fields, RLP-ready, in EIP-1559's order."""
        if self.to is not None and len(self.to) != 20:
            raise ValueError("transaction field to must be a 20-byte address")
        return [
            _scalar(self.chain_id, "chain_id"),
            _scalar(self.nonce, "nonce"),
            _scalar(self.max_priority_fee_per_gas, "max_priority_fee_per_gas"),
            _scalar(self.max_fee_per_gas, "max_fee_per_gas"),
            _scalar(self.gas, "gas"),
            b"" if self.to is None else bytes(self.to),
            _scalar(self.value, "value"),
            bytes(self.data),
            [],  # access list
        ]

    def signing_hash(self) -> bytes:
        """What the sender signs: keccak256(0x02 ‖ rlp(fields))."""
        return keccak(_TYPE_EIP1559 + rlp_encode(self.fields()))


class Account:
    """An on-chain account that can sign transactions; the key never leaves this object.
    The key and its signatures are the channel `Signer`'s (same curve, same r ‖ s ‖ v)."""

    __slots__ = ("_signer", "address")

    def __init__(self, private_key: bytes) -> None:
        private_key = bytes(private_key)
        if len(private_key) != 32:
            raise ValueError("a private key has 32 bytes")
        # coincurve refuses 0 and keys at or above the curve order (ValueError).
        self._signer = Signer(private_key)
        self.address: Address = self._signer.address

    @property
    def checksum_address(self) -> str:
        """The EIP-55 form of the address."""
        return hex_address(self.address)

    def sign_transaction(self, transaction: Eip1559Transaction) -> tuple[bytes, bytes]:
        """Sign `transaction`; returns (raw transaction, tx hash)."""
        fields = transaction.fields()
        signature = self._signer.sign_digest(transaction.signing_hash())
        r, s = signature[:32].lstrip(b"\x00"), signature[32:64].lstrip(b"\x00")
        raw = _TYPE_EIP1559 + rlp_encode([*fields, _scalar(signature[64] - 27, "y_parity"),
                                          r, s])
        return raw, keccak(raw)

    def sign_hash(self, digest: bytes) -> bytes:
        """A 65-byte `r ‖ s ‖ v` signature (v 27 or 28) of the 32-byte `digest` itself (no
        message prefix): for EIP-712 messages such as an EIP-2612 permit, whose digest the
        caller builds."""
        if len(digest) != 32:
            raise ValueError("a digest has 32 bytes")
        return bytes(self._signer.sign_digest(digest))

    def __repr__(self) -> str:
        # Never the key: reprs end up in logs and tracebacks.
        return f"Account({self.checksum_address})"
