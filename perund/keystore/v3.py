"""Ethereum keystore v3 files: read, check, unlock, write.

The files are those geth, clef, MetaMask and eth-account write (Web3 Secret Storage, version 3):
AES-128-CTR under a key derived from the password with scrypt or PBKDF2-HMAC-SHA256, and a
Keccak MAC that tells a wrong password from a right one. Unlocking uses hashlib (scrypt, PBKDF2)
and pycryptodome (AES) directly: eth-account, which did it before, costs a node start ~0.5 s of
imports. Writing a keystore (`perund generate`) still uses eth-account, imported when called.
This module checks everything around the cryptography so a user's mistake becomes one clear
`InvalidConfig` naming the configuration field, and a hostile or damaged file cannot make us
derive a key with absurd parameters (a scrypt `n` of 2**40 would exhaust memory before the MAC
could say "wrong").

Neither a password nor a key ever appears in an error message or a log line: messages name the
field, the file and what is wrong with it, nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from Crypto.Cipher import AES
from twisted.logger import Logger

from perund.channel.encoding import Signer, keccak
from perund.channel.types import Address, hex_address, to_address
from perund.errors import InvalidConfig, ResourceExists
from perund.new_files import create_whole
from perund.safe_files import FileRules

log = Logger(namespace="perund.keystore")

PASSWORD_ENV = "PERUND_PASSWORD"
"""The environment variable that holds the password when no password file is configured."""

# Bounds on the key-derivation parameters we agree to run. geth's standard scrypt setting is
# n=2**18, r=8, p=1 (256 MiB, ~0.7 s here); nothing legitimate needs more than 1 GiB of scrypt
# memory or ten million PBKDF2 rounds, and a file asking for more is refused before we try.
_SCRYPT_MAX_MEMORY = 1 << 30
_SCRYPT_MAX_P = 16
_PBKDF2_MAX_ROUNDS = 10_000_000

# What `write_keystore` uses: geth's standard scrypt cost for real keys; for dev keys the "light"
# cost (geth's LightScryptN = 4096), ~10 ms to unlock instead of ~0.7 s, so tests and
# `perund generate` stay fast. Dev keys guard test money only.
STANDARD_SCRYPT_N = 1 << 18
LIGHT_SCRYPT_N = 1 << 12


@dataclass(frozen=True, slots=True)
class Keystore:
    """A parsed, structurally checked keystore v3 file (still encrypted)."""

    path: Path
    document: Mapping[str, Any]
    address: Address | None
    """The address the file claims (its optional `address` field); only the key proves it."""
    kdf: str


def _fail(field: str, path: Path | str, what: str) -> InvalidConfig:
    return InvalidConfig(f"{field}: {what}", name=field, value=str(path), requirement=what)


def read_password(
    password_file: Path | None,
    *,
    field: str = "password_file",
    environ: Mapping[str, str] | None = None,
    rules: FileRules | None = None,
) -> str:
    """The password: the first line of `password_file` (read under `rules`), else the
    PERUND_PASSWORD variable.

    Only the line end is stripped (`\\n` or `\\r\\n`): spaces are part of a password. A password
    file that others can read is accepted with a warning (docs/conventions.md §9: secrets in
    files of mode 0600).
    """
    if password_file is None:
        env = os.environ if environ is None else environ
        if PASSWORD_ENV in env:
            return env[PASSWORD_ENV]
        raise InvalidConfig(
            f"{field}: no password: set {field} or the {PASSWORD_ENV} environment variable",
            name=field, value=None, requirement=f"a password file, or {PASSWORD_ENV}")
    raw = (rules or FileRules()).read(password_file, field)
    try:
        exposed = password_file.stat().st_mode & 0o077
    except OSError:
        exposed = 0
    if exposed:
        log.warn("password file {path} can be read by other users; chmod 600 it",
                 path=str(password_file))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(field, password_file, "not UTF-8 text") from None
    first = text.split("\n", 1)[0]
    return first[:-1] if first.endswith("\r") else first


def _lower_keys(value: Any) -> Any:
    # Older geth and MyEtherWallet files say "Crypto"; eth-account matches keys case-insensitively.
    if isinstance(value, dict):
        return {k.lower() if isinstance(k, str) else k: _lower_keys(v) for k, v in value.items()}
    return value


def _hex_bytes(value: Any, size: int | None) -> bytes | None:
    if not isinstance(value, str):
        return None
    text = value[2:] if value[:2] in ("0x", "0X") else value
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    if size is not None and len(raw) != size:
        return None
    return raw


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def _check_kdf(crypto: Mapping[str, Any]) -> str | None:
    """Why the KDF section is unusable, or None when it is fine."""
    kdf = crypto.get("kdf")
    params = crypto.get("kdfparams")
    if not isinstance(params, dict):
        return "crypto.kdfparams is missing"
    if params.get("dklen") != 32:
        return "crypto.kdfparams.dklen is not 32"
    salt = _hex_bytes(params.get("salt"), None)
    if salt is None or not salt:
        return "crypto.kdfparams.salt is not hex"
    if kdf == "scrypt":
        n, r, p = (_positive_int(params.get(k)) for k in ("n", "r", "p"))
        if n is None or r is None or p is None:
            return "crypto.kdfparams n, r and p must be positive integers"
        if n < 2 or n & (n - 1):
            return "crypto.kdfparams.n is not a power of two"
        if 128 * n * r > _SCRYPT_MAX_MEMORY or p > _SCRYPT_MAX_P:
            return "the scrypt parameters ask for more than 1 GiB or p > 16 (refused)"
        return None
    if kdf == "pbkdf2":
        c = _positive_int(params.get("c"))
        if c is None:
            return "crypto.kdfparams.c must be a positive integer"
        if c > _PBKDF2_MAX_ROUNDS:
            return "more than 10,000,000 PBKDF2 rounds (refused)"
        if params.get("prf") != "hmac-sha256":
            return "crypto.kdfparams.prf is not hmac-sha256"
        return None
    return f"unsupported key derivation function {kdf!r} (scrypt or pbkdf2)"


def load_keystore(path: Path, *, field: str, rules: FileRules | None = None) -> Keystore:
    """Read `path` (under `rules`) and check it is a usable keystore v3 file; nothing is
    decrypted yet."""
    text = (rules or FileRules()).read_text(path, field, "keystore file")
    try:
        document = json.loads(text)
    except ValueError:
        raise _fail(field, path, "not a keystore file: not JSON") from None
    if not isinstance(document, dict):
        raise _fail(field, path, "not a keystore file: not a JSON object")
    document = _lower_keys(document)
    version = document.get("version")
    if version != 3 or isinstance(version, bool):
        if version is None:
            raise _fail(field, path, "not a keystore v3 file: no version")
        raise _fail(field, path, f"not a keystore v3 file (version {str(version)[:20]})")
    crypto = document.get("crypto")
    if not isinstance(crypto, dict):
        raise _fail(field, path, "not a keystore v3 file: no crypto section")
    if crypto.get("cipher") != "aes-128-ctr":
        raise _fail(field, path, "unsupported cipher (keystore v3 uses aes-128-ctr)")
    params = crypto.get("cipherparams")
    if not isinstance(params, dict) or _hex_bytes(params.get("iv"), 16) is None:
        raise _fail(field, path, "damaged keystore: crypto.cipherparams.iv is not 16 hex bytes")
    if _hex_bytes(crypto.get("ciphertext"), 32) is None:
        raise _fail(field, path, "damaged keystore: crypto.ciphertext is not 32 hex bytes")
    if _hex_bytes(crypto.get("mac"), 32) is None:
        raise _fail(field, path, "damaged keystore: crypto.mac is not 32 hex bytes")
    problem = _check_kdf(crypto)
    if problem is not None:
        raise _fail(field, path, problem)
    claimed: Address | None = None
    if "address" in document:
        raw = _hex_bytes(document["address"], 20)
        if raw is None:
            raise _fail(field, path, "damaged keystore: address is not 20 hex bytes")
        claimed = Address(raw)
    return Keystore(path=path, document=document, address=claimed, kdf=str(crypto["kdf"]))


class _WrongMac(Exception):
    """The MAC does not match: a wrong password, or a damaged ciphertext or MAC."""


def _derive(crypto: Mapping[str, Any], password: bytes) -> bytes:
    """The 32-byte key derived from `password` (parameters checked by `load_keystore`)."""
    params = crypto["kdfparams"]
    salt = _hex_bytes(params["salt"], None) or b""
    if crypto["kdf"] == "scrypt":
        n, r, p = params["n"], params["r"], params["p"]
        # OpenSSL's scrypt needs 128·r·(n + p + 2) bytes; its default ceiling is 32 MiB.
        return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=32,
                              maxmem=128 * r * (n + p + 2) + (1 << 20))
    return hashlib.pbkdf2_hmac("sha256", password, salt, params["c"], dklen=32)


def _decrypt(crypto: Mapping[str, Any], password: str) -> bytes:
    """The 32 bytes a keystore's crypto section holds; _WrongMac when the MAC disagrees."""
    derived = _derive(crypto, password.encode("utf-8"))
    ciphertext = _hex_bytes(crypto["ciphertext"], 32) or b""
    mac = _hex_bytes(crypto["mac"], 32) or b""
    if not hmac.compare_digest(keccak(derived[16:32] + ciphertext), mac):
        raise _WrongMac
    iv = _hex_bytes(crypto["cipherparams"]["iv"], 16) or b""
    # Keystore v3's CTR mode: the IV is the initial value of a 128-bit big-endian counter.
    cipher = AES.new(derived[:16], AES.MODE_CTR, nonce=b"", initial_value=iv)
    return cipher.decrypt(ciphertext)


def decrypt_keystore(keystore: Keystore, password: str, *, field: str,
                     address: Address | None = None) -> bytes:
    """The private key in `keystore`; with `address`, also check the key is that account's.

    CPU-bound: ~0.7 s for geth's standard scrypt, ~10 ms for the light setting.
    """
    if address is not None and keystore.address is not None and keystore.address != address:
        # Cheap early answer before the expensive KDF; the key check below is the real one.
        raise _fail(field, keystore.path,
                    f"address mismatch: the keystore is for {hex_address(keystore.address)}, "
                    f"the configured address is {hex_address(address)}")
    try:
        key = _decrypt(keystore.document["crypto"], password)
    except _WrongMac:
        raise _fail(field, keystore.path, "wrong password (or a damaged keystore)") from None
    except Exception:  # never let a library message carry secrets outward
        raise _fail(field, keystore.path, "cannot decrypt the keystore") from None
    try:
        actual = Signer(key).address
    except Exception:  # same: no library text in our errors
        raise _fail(field, keystore.path,
                    "the keystore does not hold a valid secp256k1 key") from None
    if address is not None and actual != address:
        raise _fail(field, keystore.path,
                    f"address mismatch: the key is for {hex_address(actual)}, "
                    f"the configured address is {hex_address(address)}")
    if keystore.address is not None and actual != keystore.address:
        raise _fail(field, keystore.path,
                    "damaged keystore: its address field does not match its key")
    log.info("unlocked {field} keystore for {address}", field=field,
             address=hex_address(actual))
    return key


def unlock_keystore(path: Path, password: str, *, field: str,
                    address: Address | None = None, rules: FileRules | None = None) -> bytes:
    """Load, check and decrypt the keystore v3 file at `path`: the raw 32-byte private key.

    Every failure is `InvalidConfig` naming `field` (missing file, not JSON, not v3, bad
    parameters, wrong password, address mismatch); never the password or the key.
    """
    return decrypt_keystore(load_keystore(path, field=field, rules=rules), password,
                            field=field, address=address)


def write_keystore(path: Path | str, private_key: bytes, password: str, *,
                   light: bool = False) -> Address:
    """Encrypt `private_key` with `password` into a new keystore v3 file at `path` (mode 0600).

    scrypt with geth's standard cost, or with `light=True` the light cost (n=4096, for dev keys
    and tests). Refuses to overwrite an existing file (`ResourceExists`): a key file replaced by
    mistake is money lost. The file appears complete or not at all (written aside, fsynced,
    then linked into place). Returns the key's address.
    """
    # Imported here: eth-account costs ~0.5 s to import, which unlocking (a node start) no
    # longer pays; writing keystores is `perund generate`'s and the tests' business.
    from eth_account import Account as _EthAccount

    target = Path(path)
    account = _EthAccount.from_key(private_key)
    document = _EthAccount.encrypt(
        private_key, password, kdf="scrypt",
        iterations=LIGHT_SCRYPT_N if light else STANDARD_SCRYPT_N)
    data = json.dumps(document, separators=(",", ":")).encode("ascii")
    if target.exists():
        raise ResourceExists(f"keystore file {target} exists", type="keystore", id=str(target))
    try:
        create_whole(target, data)
    except FileExistsError:
        raise ResourceExists(f"keystore file {target} exists", type="keystore",
                             id=str(target)) from None
    return to_address(account.address)
