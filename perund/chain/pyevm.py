"""An in-process EVM (eth-tester + py-evm) with funded dev accounts: the chain of the fast tests
(`ChainBackend` with no URL, shown as `embedded://devchain`).

It is NOT thread-safe: every call, construction included, must come from one thread (the chain
backend gives it a pool of exactly one thread). Only imported when such a chain is made: its
dependencies take about a second to import, which a node start must not pay.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from typing import Any, cast

from eth.db import get_db_backend
from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak
from eth_keys.datatypes import PrivateKey
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.backends.pyevm.main import get_default_genesis_params, setup_tester_chain
from eth_tester.exceptions import TransactionFailed
from eth_tester.exceptions import ValidationError as TesterValidationError
from eth_utils.exceptions import ValidationError as EthValidationError
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider
from web3.providers.eth_tester.defaults import API_ENDPOINTS
from web3.types import RPCEndpoint, RPCResponse

from perund.chain.account import Account
from perund.chain.devchain import (
    DEFAULT_DEV_CHAIN_ID,
    DEV_ACCOUNT_COUNT,
    DEV_BALANCE,
    EMBEDDED_URL,
    dev_private_keys,
)
from perund.chain.jsonrpc import Answer, answer_of
from perund.channel.types import Address
from perund.errors import ChainRpcError

_ERROR_STRING_SELECTOR = keccak(b"Error(string)")[:4]
_REVERTED_PREFIX = "execution reverted: "


def _revert_data_from_message(message: str) -> bytes:
    """The revert data behind eth-tester's message `execution reverted: <reason>`.

    eth-tester reports a revert as text: the repr of the raw revert data when it is not an
    `Error(string)`, or the decoded reason when it is. Both are turned back into the bytes a
    JSON-RPC node would return, so our decoder sees the same thing on every chain.
    """
    reason = message[len(_REVERTED_PREFIX) :] if message.startswith(_REVERTED_PREFIX) else message
    if reason[:2] in ("b'", 'b"'):
        try:
            value = ast.literal_eval(reason)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, bytes):
            return value
    if not reason:
        return b""
    return _ERROR_STRING_SELECTOR + abi_encode(["string"], [reason])


class _DevChainProvider(EthereumTesterProvider):
    """eth-tester's provider, answering a revert like a JSON-RPC node does.

    The stock provider raises eth-tester's own exception type from `eth_call` and
    `eth_estimateGas`; a node returns an error object with code 3 and the revert data. Returning
    the latter makes a revert here the same ChainRpcError, revert data included, as on anvil.
    It also answers `eth_chainId` with the chain's real ID (the stock one returns a constant).
    """

    def __init__(self, tester: EthereumTester, chain_id: int) -> None:
        endpoints = dict(API_ENDPOINTS)
        endpoints["eth"] = dict(endpoints["eth"], chainId=lambda *_: chain_id)
        super().__init__(tester, api_endpoints=endpoints)

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        try:
            return super().make_request(method, params)
        except TransactionFailed as exc:
            message = str(exc.args[0]) if exc.args else ""
            data = _revert_data_from_message(message)
            return cast(
                RPCResponse,
                {
                    "jsonrpc": "2.0",
                    "id": self._current_request_id,
                    "error": {
                        "code": 3,
                        "message": "execution reverted",
                        "data": "0x" + data.hex(),
                    },
                },
            )


def _as_json_rpc(value: Any) -> Any:
    """eth-tester's answer in the JSON-RPC format a node sends: integers as hex quantities,
    bytes as hex data (web3's eth-tester middleware has renamed the keys already)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Mapping):
        return {key: _as_json_rpc(item) for key, item in value.items()}
    if isinstance(value, Sequence):
        return [_as_json_rpc(item) for item in value]
    raise TypeError(f"eth-tester answered with a {type(value).__name__}")


class TesterTransport:
    """The chain client's transport to the in-process chain: JSON-RPC requests through web3's
    eth-tester provider (with its middleware, which turns the JSON-RPC format into eth-tester's
    and back), answers in the JSON-RPC format. One thread only, like the chain."""

    url = EMBEDDED_URL
    via: str | None = None

    def __init__(self, w3: Web3) -> None:
        self._send = w3.provider.request_func(w3, w3.middleware_onion)

    def request(self, method: str, params: Sequence[Any]) -> Any:
        """The `result` of `method(params)`; ChainRpcError for the chain's error."""
        try:
            response = self._send(RPCEndpoint(method), list(params))
        except (TesterValidationError, EthValidationError) as exc:
            # What a node answers with an error object (a transaction it will not take).
            raise ChainRpcError(method, -32000, str(exc)) from None
        answer = answer_of(self.url, method, response)
        if answer.error is not None:
            raise answer.error
        return _as_json_rpc(answer.result)

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Answer] | None:
        """The answers to `calls`, one after the other (there is no round trip to save)."""
        answers = []
        for method, params in calls:
            try:
                answers.append(Answer(result=self.request(method, params)))
            except ChainRpcError as exc:
                answers.append(Answer(error=exc))
        return answers

    def close(self) -> None:
        """Nothing to release: the chain lives as long as its DevChain."""


class _DevChainBackend(PyEVMBackend):  # type: ignore[misc]  # eth_tester is untyped
    """PyEVMBackend with a chosen chain ID (eth-tester hard-codes one)."""

    def __init__(
        self,
        chain_id: int,
        genesis_state: dict[Address, dict[str, Any]],
        private_keys: tuple[bytes, ...],
    ) -> None:
        self._perund_chain_id = chain_id
        self._perund_keys = private_keys
        self._perund_genesis_state = genesis_state
        super().__init__(
            genesis_parameters=get_default_genesis_params(), genesis_state=genesis_state
        )

    def reset_to_genesis(
        self,
        genesis_params: Any = None,
        genesis_state: Any = None,
        num_accounts: Any = None,
        vm_configuration: Any = None,
        mnemonic: Any = None,
        hd_path: Any = None,
    ) -> None:
        params = genesis_params or get_default_genesis_params()
        # EthereumTester.reset_to_genesis() passes nothing: start again from our accounts.
        genesis_state = genesis_state or self._perund_genesis_state
        _, chain = setup_tester_chain(
            params, genesis_state, num_accounts, vm_configuration, mnemonic, hd_path
        )
        # eth-tester's chain class fixes chain_id as a class attribute, which py-evm reads when
        # it builds the genesis state; a subclass with ours is the supported way to change it.
        chain_class: Any = type(
            "PerundDevChain", (type(chain),), {"chain_id": self._perund_chain_id}
        )
        # eth_accounts (the default `from` of an eth_call) must be our funded dev accounts.
        self.account_keys = tuple(PrivateKey(key) for key in self._perund_keys)
        self.chain = chain_class.from_genesis(get_db_backend(), params, genesis_state)


class DevChain:
    """An in-process chain with `accounts` funded dev accounts. Single-threaded: see module doc."""

    url = EMBEDDED_URL

    def __init__(
        self,
        chain_id: int = DEFAULT_DEV_CHAIN_ID,
        *,
        accounts: int = DEV_ACCOUNT_COUNT,
        balance: int = DEV_BALANCE,
    ) -> None:
        self.chain_id = chain_id
        self.private_keys = dev_private_keys(accounts)
        self.accounts: tuple[Address, ...] = tuple(
            Account(key).address for key in self.private_keys
        )
        genesis_state = {
            address: {"balance": balance, "storage": {}, "code": b"", "nonce": 0}
            for address in self.accounts
        }
        self.tester = EthereumTester(_DevChainBackend(chain_id, genesis_state, self.private_keys))
        # No web3 middleware: the transport wants the provider's answers as they are (the
        # provider's own eth-tester middleware still applies).
        self.w3 = Web3(_DevChainProvider(self.tester, chain_id), middleware=[])
        self.transport = TesterTransport(self.w3)

    def dev_account(self, index: int) -> Account:
        """Dev account `index` as a transaction signer."""
        return Account(self.private_keys[index])

    def latest_timestamp(self) -> int:
        """The latest block's timestamp."""
        return int(self.tester.get_block_by_number("latest")["timestamp"])

    def advance_time(self, seconds: int) -> int:
        """Mine a block at least `seconds` after the latest one; its timestamp (timeout tests)."""
        if seconds < 1:
            raise ValueError("time only moves forward, by at least a second")
        target = self.latest_timestamp() + seconds
        self.tester.time_travel(target)
        if self.latest_timestamp() < target:
            # eth-tester's time_travel mines the block one second before the time it is given.
            self.tester.time_travel(2 * target - self.latest_timestamp())
        return self.latest_timestamp()

    def mine(self, blocks: int = 1) -> None:
        """Mine `blocks` blocks, including any pending transactions."""
        self.tester.mine_blocks(blocks)

    def set_automine(self, enabled: bool) -> None:
        """Mine each transaction at once (the default), or leave it pending until `mine`."""
        if enabled:
            self.tester.enable_auto_mine_transactions()
        else:
            self.tester.disable_auto_mine_transactions()

    def __repr__(self) -> str:
        return f"DevChain(chain_id={self.chain_id}, accounts={len(self.accounts)})"
