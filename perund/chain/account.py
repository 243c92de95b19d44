"""On-chain accounts: an address plus a local transaction signer (eth-account).

Transactions are signed here and sent raw, so the same code works on the embedded chain, anvil,
geth or a hosted node, none of which ever sees a key.
"""

from __future__ import annotations

from typing import Any

from eth_account import Account as _EthAccount
from eth_account.signers.local import LocalAccount
from eth_typing import Hash32

from perund.channel.types import Address, hex_address, to_address


class Account:
    """An on-chain account that can sign transactions; the key never leaves this object."""

    __slots__ = ("_local", "address")

    def __init__(self, private_key: bytes) -> None:
        self._local: LocalAccount = _EthAccount.from_key(private_key)
        self.address: Address = to_address(self._local.address)

    @property
    def checksum_address(self) -> str:
        """The EIP-55 form of the address, what web3 expects."""
        return hex_address(self.address)

    def sign_transaction(self, transaction: dict[str, Any]) -> tuple[bytes, bytes]:
        """Sign `transaction` (a web3 transaction dict); returns (raw transaction, tx hash)."""
        signed = self._local.sign_transaction(transaction)
        return bytes(signed.raw_transaction), bytes(signed.hash)

    def sign_hash(self, digest: bytes) -> bytes:
        """A 65-byte `r ‖ s ‖ v` signature of the 32-byte `digest` itself (no message prefix):
        for EIP-712 messages such as an EIP-2612 permit, whose digest the caller builds."""
        if len(digest) != 32:
            raise ValueError("a digest has 32 bytes")
        signed = self._local.unsafe_sign_hash(Hash32(digest))
        return signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v])

    def __repr__(self) -> str:
        # Never the key: reprs end up in logs and tracebacks.
        return f"Account({self.checksum_address})"
