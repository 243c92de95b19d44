"""Keystore v3 files: the encrypted on-chain and off-chain keys of a session (see `v3`)."""

from __future__ import annotations

from perund.keystore.v3 import (
    LIGHT_SCRYPT_N,
    PASSWORD_ENV,
    STANDARD_SCRYPT_N,
    Keystore,
    decrypt_keystore,
    load_keystore,
    read_password,
    unlock_keystore,
    write_keystore,
)

__all__ = [
    "LIGHT_SCRYPT_N",
    "PASSWORD_ENV",
    "STANDARD_SCRYPT_N",
    "Keystore",
    "decrypt_keystore",
    "load_keystore",
    "read_password",
    "unlock_keystore",
    "write_keystore",
]
