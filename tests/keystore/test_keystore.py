"""Keystore v3: reading what other wallets write, unlocking, writing, and every failure."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from Crypto.Cipher import AES
from Crypto.Util import Counter
from eth_account import Account as EthAccount
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import formatEvent

from perund.channel.types import hex_address, to_address
from perund.errors import InvalidConfig, ResourceExists
from perund.keystore import (
    LIGHT_SCRYPT_N,
    PASSWORD_ENV,
    load_keystore,
    read_password,
    unlock_keystore,
    write_keystore,
)

PASSWORD = "s3cr3t-Pässwörd-XYZ"
KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
ADDRESS = to_address(EthAccount.from_key(KEY).address)

# The PBKDF2 test vector of the Web3 Secret Storage definition (what geth's tests use).
WEB3_PBKDF2 = {
    "crypto": {
        "cipher": "aes-128-ctr",
        "cipherparams": {"iv": "6087dab2f9fdbbfaddc31a909735c1e6"},
        "ciphertext": "5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46",
        "kdf": "pbkdf2",
        "kdfparams": {"c": 262144, "dklen": 32, "prf": "hmac-sha256",
                      "salt": "ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd"},
        "mac": "517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2",
    },
    "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
    "version": 3,
}
# Its scrypt sibling (n=2**18, r=1, p=8): ~1 s to derive here, so only its parsing is tested.
WEB3_SCRYPT = {
    "crypto": {
        "cipher": "aes-128-ctr",
        "cipherparams": {"iv": "83dbcc02d8ccb40e466191a123791e0e"},
        "ciphertext": "d172bf743a674da9cdad04534d56926ef8358534d458fffccd4e6ad2fbde479c",
        "kdf": "scrypt",
        "kdfparams": {"dklen": 32, "n": 262144, "r": 1, "p": 8,
                      "salt": "ab0c7876052600dd703518d6fc3fe8984592145b591fc8fb5c6d43190334ba19"},
        "mac": "2103ac29920d71da29f15d75b4a16dbe95cfd7ff8faea1056c33131d846e3097",
    },
    "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
    "version": 3,
}
WEB3_KEY = bytes.fromhex("7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d")


def _write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


def _light(tmp_path: Path, name: str = "key.json", key: bytes = KEY,
           password: str = PASSWORD) -> Path:
    path = tmp_path / name
    write_keystore(path, key, password, light=True)
    return path


def _crafted(plaintext: bytes, password: str) -> dict[str, Any]:
    """A keystore built by hand around any 32 bytes (eth-account refuses invalid keys)."""
    salt = os.urandom(16)
    iv = os.urandom(16)
    derived = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 1, 32)
    counter = Counter.new(128, initial_value=int.from_bytes(iv, "big"))
    ciphertext = AES.new(derived[:16], AES.MODE_CTR, counter=counter).encrypt(plaintext)
    return {
        "version": 3,
        "crypto": {
            "cipher": "aes-128-ctr", "cipherparams": {"iv": iv.hex()},
            "ciphertext": ciphertext.hex(), "kdf": "pbkdf2",
            "kdfparams": {"c": 1, "dklen": 32, "prf": "hmac-sha256", "salt": salt.hex()},
            "mac": keccak(derived[16:32] + ciphertext).hex(),
        },
    }


def _assert_secret_free(texts: list[str]) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert KEY.hex() not in text.lower()


def _error_texts(exc: InvalidConfig) -> list[str]:
    return [str(exc), exc.message, repr(exc.data), json.dumps(exc.to_data(), default=str)]


# --- reading what other software writes ---------------------------------------------------


def test_web3_secret_storage_pbkdf2_vector(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "vector.json", WEB3_PBKDF2)
    assert unlock_keystore(path, "testpassword", field="on_chain.keystore") == WEB3_KEY


def test_web3_secret_storage_scrypt_vector_is_accepted(tmp_path: Path) -> None:
    keystore = load_keystore(_write_json(tmp_path / "vector.json", WEB3_SCRYPT),
                             field="on_chain.keystore")
    assert keystore.kdf == "scrypt"
    assert keystore.address is None


def test_eth_account_files_with_either_kdf(tmp_path: Path) -> None:
    for kdf, work in (("scrypt", 1024), ("pbkdf2", 1000)):
        document = EthAccount.encrypt(KEY, PASSWORD, kdf=kdf, iterations=work)
        path = _write_json(tmp_path / f"{kdf}.json", document)
        assert unlock_keystore(path, PASSWORD, field="f", address=ADDRESS) == KEY


def test_capitalised_crypto_section_and_0x_prefixes(tmp_path: Path) -> None:
    # Older geth and MyEtherWallet files: "Crypto", and some tools add 0x to hex fields.
    document = EthAccount.encrypt(KEY, PASSWORD, kdf="pbkdf2", iterations=1000)
    crypto = document.pop("crypto")
    crypto["mac"] = "0x" + crypto["mac"]
    document["Crypto"] = crypto
    document["address"] = hex_address(ADDRESS)
    path = _write_json(tmp_path / "old.json", document)
    assert unlock_keystore(path, PASSWORD, field="f", address=ADDRESS) == KEY


# --- writing --------------------------------------------------------------------------------


def test_write_light_keystore_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    assert write_keystore(path, KEY, PASSWORD, light=True) == ADDRESS
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["version"] == 3
    assert document["crypto"]["kdf"] == "scrypt"
    assert document["crypto"]["kdfparams"]["n"] == LIGHT_SCRYPT_N
    assert to_address(document["address"]) == ADDRESS
    assert PASSWORD not in path.read_text()
    assert KEY.hex() not in path.read_text()
    assert unlock_keystore(path, PASSWORD, field="off_chain.keystore", address=ADDRESS) == KEY
    assert [p.name for p in tmp_path.iterdir()] == ["dev.json"]  # no temporary file left


def test_standard_cost_is_geths(tmp_path: Path) -> None:
    # Writing with the standard cost takes ~0.7 s; check the setting without deriving.
    from perund.keystore import STANDARD_SCRYPT_N

    assert STANDARD_SCRYPT_N == 2**18


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    path = _light(tmp_path)
    before = path.read_bytes()
    with pytest.raises(ResourceExists):
        write_keystore(path, bytes(31) + b"\x01", "other", light=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["key.json"]


@settings(max_examples=12, deadline=None)
@given(key=st.binary(min_size=32, max_size=32).filter(lambda k: 0 < int.from_bytes(k, "big")
                                                      < 2**256 - 2**129),
       password=st.text(max_size=40))
def test_round_trip_any_key_and_password(tmp_path_factory: pytest.TempPathFactory, key: bytes,
                                         password: str) -> None:
    path = tmp_path_factory.mktemp("rt") / "k.json"
    address = write_keystore(path, key, password, light=True)
    assert unlock_keystore(path, password, field="f", address=address) == key
    with pytest.raises(InvalidConfig, match="wrong password"):
        unlock_keystore(path, password + "x", field="f", address=address)


# --- failures: each names the field and what is wrong, never a secret ------------------------


def _bad_documents() -> dict[str, tuple[object, str]]:
    good = EthAccount.encrypt(KEY, PASSWORD, kdf="pbkdf2", iterations=1000)

    def changed(path: tuple[str, ...], value: object) -> dict[str, Any]:
        document = json.loads(json.dumps(good))
        target = document
        for step in path[:-1]:
            target = target[step]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return document

    scrypt = json.loads(json.dumps(WEB3_SCRYPT))
    huge = json.loads(json.dumps(scrypt))
    huge["crypto"]["kdfparams"]["n"] = 2**30
    many_p = json.loads(json.dumps(scrypt))
    many_p["crypto"]["kdfparams"]["p"] = 1000
    odd_n = json.loads(json.dumps(scrypt))
    odd_n["crypto"]["kdfparams"]["n"] = 1000
    return {
        "array": ([good], "not a JSON object"),
        "v4": (changed(("version",), 4), "not a keystore v3 file (version 4)"),
        "no version": (changed(("version",), _DELETE), "no version"),
        "no crypto": (changed(("crypto",), _DELETE), "no crypto section"),
        "cipher": (changed(("crypto", "cipher"), "aes-256-gcm"), "unsupported cipher"),
        "iv": (changed(("crypto", "cipherparams", "iv"), "zz"), "iv"),
        "ciphertext": (changed(("crypto", "ciphertext"), "00"), "ciphertext"),
        "mac": (changed(("crypto", "mac"), 5), "mac"),
        "kdf": (changed(("crypto", "kdf"), "argon2"), "unsupported key derivation"),
        "dklen": (changed(("crypto", "kdfparams", "dklen"), 16), "dklen"),
        "prf": (changed(("crypto", "kdfparams", "prf"), "hmac-md5"), "prf"),
        "rounds": (changed(("crypto", "kdfparams", "c"), 10**9), "PBKDF2 rounds"),
        "zero rounds": (changed(("crypto", "kdfparams", "c"), 0), "positive integer"),
        "salt": (changed(("crypto", "kdfparams", "salt"), ""), "salt"),
        "scrypt memory": (huge, "1 GiB"),
        "scrypt p": (many_p, "p > 16"),
        "scrypt n": (odd_n, "power of two"),
        "address": (changed(("address",), "0x12"), "address is not 20 hex bytes"),
    }


_DELETE = object()


@pytest.mark.parametrize("case", sorted(_bad_documents()))
def test_bad_files_are_refused_before_any_derivation(tmp_path: Path, case: str,
                                                     logs: list[dict[str, Any]]) -> None:
    document, expected = _bad_documents()[case]
    path = _write_json(tmp_path / "bad.json", document)
    with pytest.raises(InvalidConfig) as caught:
        unlock_keystore(path, PASSWORD, field="off_chain.keystore", address=ADDRESS)
    assert caught.value.code == 205
    assert caught.value.data["name"] == "off_chain.keystore"
    assert caught.value.data["value"] == str(path)
    assert expected in caught.value.message
    _assert_secret_free(_error_texts(caught.value) + [formatEvent(e) for e in logs])


def test_missing_file_directory_and_not_json(tmp_path: Path) -> None:
    cases = {
        tmp_path / "absent.json": "no such file",
        tmp_path: "not a file",
        tmp_path / "text.json": "not JSON",
        tmp_path / "binary.json": "not UTF-8",
    }
    (tmp_path / "text.json").write_text("this is not json {")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    for path, expected in cases.items():
        with pytest.raises(InvalidConfig) as caught:
            unlock_keystore(path, PASSWORD, field="on_chain.keystore")
        assert expected in caught.value.message
        assert caught.value.data["name"] == "on_chain.keystore"


def test_wrong_password(tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    path = _light(tmp_path)
    with pytest.raises(InvalidConfig) as caught:
        unlock_keystore(path, "not-" + PASSWORD, field="off_chain.keystore", address=ADDRESS)
    assert "wrong password" in caught.value.message
    assert caught.value.data["name"] == "off_chain.keystore"
    texts = _error_texts(caught.value) + [formatEvent(e) for e in logs]
    _assert_secret_free(texts)
    assert all("not-" + PASSWORD not in text for text in texts)


def _flip(hex_text: str, index: int = 0) -> str:
    raw = bytearray(bytes.fromhex(hex_text))
    raw[index] ^= 0x01
    return raw.hex()


@pytest.mark.parametrize("kdf", ["scrypt", "pbkdf2"])
@pytest.mark.parametrize("damaged", ["mac", "ciphertext"])
def test_a_damaged_mac_or_ciphertext_reads_as_a_wrong_password(tmp_path: Path, kdf: str,
                                                               damaged: str) -> None:
    document = EthAccount.encrypt(KEY, PASSWORD, kdf=kdf, iterations=1024)
    document["crypto"][damaged] = _flip(document["crypto"][damaged], 7)
    path = _write_json(tmp_path / "k.json", document)
    with pytest.raises(InvalidConfig) as caught:
        unlock_keystore(path, PASSWORD, field="f", address=ADDRESS)
    assert caught.value.message == "f: wrong password (or a damaged keystore)"
    _assert_secret_free(_error_texts(caught.value))


def test_a_damaged_iv_is_caught_by_the_address(tmp_path: Path) -> None:
    # The MAC does not cover the IV: a damaged one decrypts to another key, which the address
    # (the file's field, or the configured one) gives away.
    document = EthAccount.encrypt(KEY, PASSWORD, kdf="pbkdf2", iterations=1000)
    document["crypto"]["cipherparams"]["iv"] = _flip(document["crypto"]["cipherparams"]["iv"])
    with pytest.raises(InvalidConfig, match="damaged keystore: its address field does not "
                                            "match its key"):
        unlock_keystore(_write_json(tmp_path / "a.json", document), PASSWORD, field="f")
    del document["address"]
    with pytest.raises(InvalidConfig, match="address mismatch: the key is for"):
        unlock_keystore(_write_json(tmp_path / "b.json", document), PASSWORD, field="f",
                        address=ADDRESS)


@settings(max_examples=25, deadline=None)
@given(key=st.integers(min_value=1, max_value=2**255).map(lambda k: k.to_bytes(32, "big")),
       password=st.text(max_size=40), kdf=st.sampled_from(["scrypt", "pbkdf2"]))
def test_eth_account_files_unlock_to_their_key(tmp_path_factory: pytest.TempPathFactory,
                                               key: bytes, password: str, kdf: str) -> None:
    document = EthAccount.encrypt(key, password, kdf=kdf, iterations=2 if kdf == "scrypt" else 3)
    path = _write_json(tmp_path_factory.mktemp("k") / "k.json", document)
    assert unlock_keystore(path, password, field="f",
                           address=to_address(EthAccount.from_key(key).address)) == key


def test_address_mismatch_from_the_address_field(tmp_path: Path) -> None:
    path = _light(tmp_path)
    other = to_address("0x" + "11" * 20)
    with pytest.raises(InvalidConfig) as caught:
        unlock_keystore(path, PASSWORD, field="on_chain.keystore", address=other)
    assert "address mismatch" in caught.value.message
    assert hex_address(ADDRESS) in caught.value.message
    assert hex_address(other) in caught.value.message


def test_address_mismatch_found_from_the_key(tmp_path: Path) -> None:
    # Without an address field only the decrypted key can tell.
    document = EthAccount.encrypt(KEY, PASSWORD, kdf="pbkdf2", iterations=1000)
    del document["address"]
    path = _write_json(tmp_path / "k.json", document)
    with pytest.raises(InvalidConfig, match="address mismatch: the key is for"):
        unlock_keystore(path, PASSWORD, field="on_chain.keystore",
                        address=to_address("0x" + "22" * 20))


def test_address_field_that_lies(tmp_path: Path) -> None:
    document = EthAccount.encrypt(KEY, PASSWORD, kdf="pbkdf2", iterations=1000)
    document["address"] = "33" * 20
    path = _write_json(tmp_path / "k.json", document)
    with pytest.raises(InvalidConfig, match="does not match its key"):
        unlock_keystore(path, PASSWORD, field="f")


@pytest.mark.parametrize("plaintext", [bytes(32), (2**256 - 1).to_bytes(32, "big")])
def test_invalid_secp256k1_key(tmp_path: Path, plaintext: bytes) -> None:
    path = _write_json(tmp_path / "k.json", _crafted(plaintext, PASSWORD))
    with pytest.raises(InvalidConfig, match="valid secp256k1 key"):
        unlock_keystore(path, PASSWORD, field="f")


def test_crafted_valid_key_unlocks(tmp_path: Path) -> None:
    # The hand-built helper above is itself correct: with a valid key it unlocks.
    path = _write_json(tmp_path / "k.json", _crafted(KEY, PASSWORD))
    assert unlock_keystore(path, PASSWORD, field="f", address=ADDRESS) == KEY


# --- passwords --------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "expected"), [
    (PASSWORD.encode() + b"\n", PASSWORD),
    (PASSWORD.encode() + b"\r\n", PASSWORD),
    (PASSWORD.encode(), PASSWORD),
    (b"  spaced out  \nsecond line\n", "  spaced out  "),
    (b"", ""),
    (b"\n", ""),
])
def test_password_file_first_line(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "password"
    path.write_bytes(content)
    path.chmod(0o600)
    assert read_password(path, environ={PASSWORD_ENV: "ignored"}) == expected


def test_password_from_environment(tmp_path: Path) -> None:
    assert read_password(None, environ={PASSWORD_ENV: PASSWORD}) == PASSWORD
    assert read_password(None, environ={PASSWORD_ENV: ""}) == ""


def test_no_password_anywhere() -> None:
    with pytest.raises(InvalidConfig) as caught:
        read_password(None, environ={})
    assert caught.value.data["name"] == "password_file"
    assert PASSWORD_ENV in caught.value.message


def test_password_file_failures_never_show_the_content(tmp_path: Path,
                                                       logs: list[dict[str, Any]]) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(PASSWORD.encode("utf-16"))
    cases = {tmp_path / "absent": "no such file", tmp_path: "a folder, not a file",
             binary: "not UTF-8"}
    for path, expected in cases.items():
        with pytest.raises(InvalidConfig) as caught:
            read_password(path, field="on_chain.password_file", environ={})
        assert expected in caught.value.message
        assert caught.value.data["name"] == "on_chain.password_file"
        _assert_secret_free(_error_texts(caught.value) + [formatEvent(e) for e in logs])


def test_readable_password_file_is_warned_about(tmp_path: Path,
                                                logs: list[dict[str, Any]]) -> None:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o644)
    assert read_password(path, environ={}) == PASSWORD
    warnings = [formatEvent(e) for e in logs if "chmod 600" in formatEvent(e)]
    assert len(warnings) == 1
    _assert_secret_free(warnings)
    logs.clear()
    path.chmod(0o600)
    read_password(path, environ={})
    assert not [e for e in logs if "chmod 600" in formatEvent(e)]


def test_successful_unlock_logs_no_secret(tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    path = _light(tmp_path)
    unlock_keystore(path, PASSWORD, field="off_chain.keystore", address=ADDRESS)
    texts = [formatEvent(e) for e in logs] + [repr(e) for e in logs]
    assert any(hex_address(ADDRESS) in text for text in texts)
    _assert_secret_free(texts)
