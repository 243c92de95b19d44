"""Transaction and hash signing without eth-account: byte for byte what eth-account signs."""

from __future__ import annotations

import pytest
from eth_account import Account as EthAccount
from hypothesis import given, settings
from hypothesis import strategies as st

from perund.chain.account import Account, Eip1559Transaction, rlp_encode
from perund.channel.types import Address, hex_address, to_address

_CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

keys = st.integers(min_value=1, max_value=_CURVE_ORDER - 1).map(lambda k: k.to_bytes(32, "big"))
# Field values from the edges (0, one byte, 2**k boundaries) to the largest the node sends.
amounts = st.one_of(st.sampled_from([0, 1, 127, 128, 255, 256, 2**64 - 1, 2**64]),
                    st.integers(min_value=0, max_value=2**256 - 1))
transactions = st.builds(
    Eip1559Transaction,
    chain_id=st.one_of(st.sampled_from([1, 1337, 31337, 4242]),
                       st.integers(min_value=1, max_value=2**64)),
    nonce=st.integers(min_value=0, max_value=2**64 - 2),
    max_priority_fee_per_gas=amounts,
    max_fee_per_gas=amounts,
    gas=st.integers(min_value=21_000, max_value=2**63),
    to=st.one_of(st.none(), st.binary(min_size=20, max_size=20).map(Address)),
    value=amounts,
    data=st.one_of(st.binary(max_size=80), st.binary(min_size=50, max_size=3000)),
)


def _as_eth_account_dict(tx: Eip1559Transaction) -> dict[str, object]:
    fields: dict[str, object] = {
        "type": 2, "chainId": tx.chain_id, "nonce": tx.nonce,
        "maxPriorityFeePerGas": tx.max_priority_fee_per_gas, "maxFeePerGas": tx.max_fee_per_gas,
        "gas": tx.gas, "value": tx.value, "data": tx.data,
    }
    if tx.to is not None:
        fields["to"] = hex_address(tx.to)
    return fields


@settings(max_examples=150, deadline=None)
@given(key=keys, tx=transactions)
def test_signed_transactions_are_eth_accounts_byte_for_byte(key: bytes,
                                                            tx: Eip1559Transaction) -> None:
    expected = EthAccount.sign_transaction(_as_eth_account_dict(tx), key)
    raw, tx_hash = Account(key).sign_transaction(tx)
    assert raw == bytes(expected.raw_transaction)
    assert tx_hash == bytes(expected.hash)
    # And the transaction names its sender: recovered from the signature, it is our address.
    assert to_address(EthAccount.recover_transaction(raw)) == Account(key).address


@settings(max_examples=100, deadline=None)
@given(key=keys, digest=st.binary(min_size=32, max_size=32))
def test_hash_signatures_are_eth_accounts(key: bytes, digest: bytes) -> None:
    expected = EthAccount.unsafe_sign_hash(digest, key)
    signature = Account(key).sign_hash(digest)
    assert signature == (expected.r.to_bytes(32, "big") + expected.s.to_bytes(32, "big")
                         + bytes([expected.v]))
    assert signature[64] in (27, 28)


@settings(max_examples=50, deadline=None)
@given(key=keys)
def test_addresses_are_eth_accounts(key: bytes) -> None:
    assert Account(key).address == to_address(EthAccount.from_key(key).address)


def test_rlp_reference_encodings() -> None:
    # The examples of the RLP definition (Ethereum Yellow Paper appendix B, ethereum.org).
    assert rlp_encode(b"dog") == bytes.fromhex("83646f67")
    assert rlp_encode([b"cat", b"dog"]) == bytes.fromhex("c88363617483646f67")
    assert rlp_encode(b"") == b"\x80"
    assert rlp_encode([]) == b"\xc0"
    assert rlp_encode(b"\x00") == b"\x00"
    assert rlp_encode(b"\x0f") == b"\x0f"
    assert rlp_encode(b"\x04\x00") == bytes.fromhex("820400")
    assert rlp_encode([[], [[]], [[], [[]]]]) == bytes.fromhex("c7c0c1c0c3c0c1c0")
    lorem = b"Lorem ipsum dolor sit amet, consectetur adipisicing elit"
    assert rlp_encode(lorem) == b"\xb8\x38" + lorem
    assert rlp_encode(b"a" * 1024) == b"\xb9\x04\x00" + b"a" * 1024


@pytest.mark.parametrize("bad", [
    {"nonce": -1}, {"value": 2**256}, {"gas": True}, {"chain_id": 1.0},
    {"to": Address(b"\x01" * 19)},
])
def test_impossible_fields_are_refused(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {"chain_id": 1, "nonce": 0, "max_priority_fee_per_gas": 1,
                                 "max_fee_per_gas": 2, "gas": 21_000, "to": None, "value": 0,
                                 "data": b""}
    fields.update(bad)
    with pytest.raises(ValueError):
        Account(b"\x01" * 32).sign_transaction(Eip1559Transaction(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [b"\x00" * 32, _CURVE_ORDER.to_bytes(32, "big"), b"\x01" * 31])
def test_invalid_keys_are_refused(key: bytes) -> None:
    with pytest.raises(ValueError):
        Account(key)


def test_the_key_never_shows() -> None:
    key = bytes(range(1, 33))
    account = Account(key)
    assert key.hex() not in repr(account) and key.hex() not in str(account)
