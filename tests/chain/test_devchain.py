"""The in-process dev chain (perund.chain.pyevm) and the dev keys, on their own (no backend, no
reactor): keys, chain ID, time, reverts."""

from __future__ import annotations

from eth_abi.abi import encode
from eth_hash.auto import keccak

from perund.chain.account import Account
from perund.chain.devchain import DEV_BALANCE, dev_private_key, dev_private_keys
from perund.chain.pyevm import DevChain, _revert_data_from_message


def test_dev_keys_are_deterministic_and_distinct() -> None:
    assert dev_private_key(0) == keccak(b"perund-dev-0")
    keys = dev_private_keys(10)
    assert keys == dev_private_keys(10) and len(set(keys)) == 10
    assert keys[:3] == dev_private_keys(3)


def test_chain_id_accounts_and_balances() -> None:
    chain = DevChain(777, accounts=3)
    assert chain.w3.eth.chain_id == 777
    assert chain.accounts == tuple(Account(k).address for k in dev_private_keys(3))
    for account in chain.w3.eth.accounts:
        assert chain.w3.eth.get_balance(account) == DEV_BALANCE
    assert len(chain.w3.eth.accounts) == 3


def test_advance_time_mines_a_later_block() -> None:
    chain = DevChain()
    before, number = chain.latest_timestamp(), chain.w3.eth.block_number
    after = chain.advance_time(1000)
    assert after == chain.latest_timestamp()
    assert before + 1000 <= after <= before + 1002
    assert chain.w3.eth.block_number > number


def test_revert_messages_become_revert_data() -> None:
    custom = bytes.fromhex("a2f43130") + (1).to_bytes(32, "big")
    assert _revert_data_from_message(f"execution reverted: {custom!r}") == custom
    assert _revert_data_from_message("execution reverted: b''") == b""
    reason = _revert_data_from_message("execution reverted: not enough")
    assert reason == keccak(b"Error(string)")[:4] + encode(["string"], ["not enough"])
    assert _revert_data_from_message("execution reverted: ") == b""
