"""The blocking half of the chain backend: web3 calls that run only on the chain thread pool.

Every public method ends in `_blocking`, takes and returns plain data (bytes, ints, frozen
dataclasses) and raises only `PerundError`s for conditions a caller handles (an unreachable node,
a revert). Nothing here touches Twisted; `perund.chain.backend` runs these methods in its pool
and hands Deferreds to the reactor side.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from eth_typing import ChecksumAddress, HexAddress, HexStr
from eth_utils.exceptions import ValidationError as EthValidationError
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.exceptions import (
    BlockNotFound,
    ContractLogicError,
    TransactionNotFound,
    Web3RPCError,
)
from web3.types import RPCEndpoint

from perund.chain.abi import ContractCodec
from perund.chain.account import Account
from perund.chain.results import ChainEvent, TxReceipt
from perund.channel.types import ETH, Address, hex_address, to_address
from perund.errors import (
    ChainNotReachable,
    InsufficientFunds,
    InvalidContracts,
    PerundError,
    ProtocolError,
    TxReverted,
)

if TYPE_CHECKING:
    from perund.chain.pyevm import DevChain

BlockId = int | Literal["latest", "pending", "earliest"]

NO_CODE = "no code"

CALL_BATCH = 500
"""View calls per JSON-RPC batch: node operators cap batches (geth at 1,000 by default)."""
"""The `error` of the InvalidContracts raised when a call finds no contract (at that block)."""

DEFAULT_PRIORITY_FEE = 10**9
"""1 gwei tip: enough on dev chains and on quiet public ones."""

GAS_MARGIN_PERCENT = 25
"""Gas limit above the estimate: the estimate is taken on the latest block, the transaction runs
on the next one. Unused gas is refunded, so the margin costs nothing."""

FALLBACK_DEPOSIT_GAS = 60_000
"""A deposit's gas when the chain cannot estimate it (the account cannot pay the probe)."""


@dataclass(frozen=True, slots=True)
class RawLog:
    """A log as the node returned it, in plain data."""

    address: Address
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    log_index: int
    tx_hash: bytes


@dataclass(frozen=True, slots=True)
class RawReceipt:
    """A receipt as the node returned it, in plain data."""

    tx_hash: bytes
    block_number: int
    status: int
    gas_used: int
    effective_gas_price: int
    contract_address: Address | None
    logs: tuple[RawLog, ...]


@dataclass(frozen=True, slots=True)
class PreparedTx:
    """A signed transaction ready to send, with what the preflight learned."""

    raw: bytes
    tx_hash: bytes
    nonce: int
    gas_limit: int


def _checksum(address: Address) -> ChecksumAddress:
    return ChecksumAddress(HexAddress(HexStr(hex_address(address))))


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, str):
        return bytes(HexBytes(value))
    raise TypeError(f"expected bytes or hex, got {type(value).__name__}")


def _raw_log(entry: Mapping[str, Any]) -> RawLog:
    return RawLog(
        address=to_address(entry["address"]),
        topics=tuple(_bytes(topic) for topic in entry["topics"]),
        data=_bytes(entry["data"]),
        block_number=int(entry["blockNumber"]),
        log_index=int(entry["logIndex"]),
        tx_hash=_bytes(entry["transactionHash"]),
    )


def _refused(tx_type: str, account: Account | None,
             exc: Web3RPCError | EthValidationError) -> ProtocolError:
    """The node's refusal of a transaction as our error: InsufficientFunds when the account
    cannot pay for it (it may be topped up and the transaction sent again)."""
    message = str(exc)
    if isinstance(exc, Web3RPCError):
        error = exc.rpc_response.get("error") if exc.rpc_response else None
        message = str(error.get("message") if isinstance(error, dict) else exc.message)
    if "insufficient funds" in message.lower() or "cannot afford" in message.lower():
        who = "the account" if account is None else f"account {account.checksum_address}"
        return InsufficientFunds(f"{who} cannot pay for the {tx_type} transaction (value and "
                                 f"gas): top it up", txType=tx_type,
                                 account=None if account is None else account.checksum_address)
    return ProtocolError(f"the node refused the {tx_type} transaction: {message}",
                         txType=tx_type)


def _revert_data(exc: ContractLogicError) -> bytes:
    data = exc.data
    if isinstance(data, Mapping):  # some nodes nest it: {"data": "0x..."}
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return b""
    return b""


class ChainClient:
    """One web3 connection and the contract codec; every method blocks.

    Thread-safety is the provider's: an HTTP provider may be used from several pool threads at
    once (web3 keeps one requests session per thread); the embedded chain may not (its pool has
    one thread).
    """

    def __init__(
        self,
        w3: Web3,
        url: str,
        codec: ContractCodec,
        *,
        priority_fee: int = DEFAULT_PRIORITY_FEE,
        devchain: DevChain | None = None,
    ) -> None:
        self.w3 = w3
        self.devchain = devchain
        self.url = url
        self.codec = codec
        self.priority_fee = priority_fee

    @contextlib.contextmanager
    def _reachable(self, what: str) -> Iterator[None]:
        """Turn transport failures (requests' errors are OSErrors) into ChainNotReachable."""
        try:
            yield
        except PerundError:
            raise
        except OSError as exc:
            raise ChainNotReachable(
                f"the chain at {self.url} is not reachable ({what}: {exc})", chainUrl=self.url
            ) from exc

    # Reads

    def chain_id_blocking(self) -> int:
        """The node's chain ID (eth_chainId, never cached)."""
        with self._reachable("eth_chainId"):
            return int(self.w3.eth.chain_id)

    def block_number_blocking(self) -> int:
        """The number of the latest block."""
        with self._reachable("eth_blockNumber"):
            return int(self.w3.eth.block_number)

    def block_hash_blocking(self, number: int) -> bytes | None:
        """The hash of block `number` on the chain as it is now; None if there is no such
        block (yet)."""
        with self._reachable("eth_getBlockByNumber"):
            try:
                block = self.w3.eth.get_block(number)
            except BlockNotFound:
                return None
        return bytes(block["hash"])

    def block_timestamp_blocking(self, block: BlockId = "latest") -> int:
        """The Unix timestamp of `block`: the chain's clock, which the contract's timeouts use."""
        with self._reachable("eth_getBlockByNumber"):
            return int(self.w3.eth.get_block(block)["timestamp"])

    def balance_blocking(self, address: Address, block: BlockId = "latest") -> int:
        """The ether balance of `address`, in wei."""
        with self._reachable("eth_getBalance"):
            return int(self.w3.eth.get_balance(_checksum(address), block))

    def code_blocking(self, address: Address) -> bytes:
        """The runtime code at `address` (empty for an account without code)."""
        with self._reachable("eth_getCode"):
            return bytes(self.w3.eth.get_code(_checksum(address)))

    def pending_nonce_blocking(self, address: Address) -> int:
        """The next nonce of `address`, counting transactions still in the node's pool."""
        with self._reachable("eth_getTransactionCount"):
            return int(self.w3.eth.get_transaction_count(_checksum(address), "pending"))

    def call_blocking(
        self, to: Address, name: str, *args: Any, block: BlockId = "latest",
        codec: ContractCodec | None = None, sender: Address | None = None,
    ) -> tuple[Any, ...]:
        """Call function `name` of the contract at `to` (the Adjudicator's ABI, or `codec`'s)
        without a transaction, from `sender` if given; its decoded outputs."""
        codec = codec or self.codec
        data = codec.encode_call(name, *args)
        call: dict[str, Any] = {"to": hex_address(to), "data": data}
        if sender is not None:
            call["from"] = hex_address(sender)
        with self._reachable(f"eth_call {name}"):
            try:
                output = self.w3.eth.call(cast(Any, call), block)
            except ContractLogicError as exc:
                raise self._reverted(name, _revert_data(exc), None) from exc
        if not output:
            # No code at `to` (at that block): a call to an account without code succeeds empty.
            raise InvalidContracts(f"no contract at {hex_address(to)} answers {name} as of "
                                   f"block {block}", name=name, address=hex_address(to),
                                   error=NO_CODE, block=block)
        try:
            return codec.decode_output(name, bytes(output))
        except Exception as exc:  # eth_abi raises several unrelated types on malformed data
            raise InvalidContracts(f"the contract at {hex_address(to)} answered {name} with "
                                   f"{len(output)} undecodable bytes", name=name,
                                   address=hex_address(to), error=str(exc)) from exc

    def succeeds_blocking(self, to: Address, data: bytes) -> bool:
        """Whether calling `to` with `data` would succeed now (simulated: no transaction)."""
        with self._reachable("eth_call"):
            try:
                self.w3.eth.call(cast(Any, {"to": hex_address(to), "data": data}), "latest")
            except (ContractLogicError, Web3RPCError, EthValidationError):
                return False
        return True

    def calls_blocking(
        self, to: Address, calls: Sequence[tuple[str, tuple[Any, ...]]],
        block: BlockId = "latest",
    ) -> list[tuple[Any, ...]]:
        """Several view calls `(name, args)` to the contract at `to`; their decoded outputs,
        in order. An HTTP node gets them in JSON-RPC batches (a node with a thousand channels
        reads them all at start: one round trip per batch, not per call); any other provider,
        or a node that refuses batches, one by one."""
        provider = self.w3.provider
        if not isinstance(provider, HTTPProvider):
            return [self.call_blocking(to, name, *args, block=block) for name, args in calls]
        target = hex_address(to)
        tag = hex(block) if isinstance(block, int) else block
        outputs: list[tuple[Any, ...]] = []
        for first in range(0, len(calls), CALL_BATCH):
            chunk = calls[first:first + CALL_BATCH]
            requests = [(RPCEndpoint("eth_call"),
                         [{"to": target, "data": "0x" + self.codec.encode_call(name, *args).hex()},
                          tag]) for name, args in chunk]
            with self._reachable("eth_call batch"):
                answers = provider.make_batch_request(requests)
            if not isinstance(answers, list) or len(answers) != len(chunk):
                # A node that takes no batches answers with one error: ask one by one.
                outputs += [self.call_blocking(to, name, *args, block=block)
                            for name, args in chunk]
                continue
            for (name, _), answer in zip(chunk, answers, strict=True):
                outputs.append(self._call_output(to, name, block, answer))
        return outputs

    def _call_output(self, to: Address, name: str, block: BlockId,
                     answer: Mapping[str, Any]) -> tuple[Any, ...]:
        """The decoded output of one answer of a batch (an error as `call_blocking` raises)."""
        error = answer.get("error")
        if error is not None:
            data = error.get("data") if isinstance(error, Mapping) else None
            if isinstance(data, str) and data.startswith("0x"):
                raise self._reverted(name, bytes.fromhex(data[2:]), None)
            raise InvalidContracts(f"the chain refused a call of {name} at {hex_address(to)}: "
                                   f"{str(error)[:200]}", name=name, address=hex_address(to))
        result = answer.get("result")
        output = bytes.fromhex(result[2:]) if isinstance(result, str) \
            and result.startswith("0x") else b""
        if not output:
            raise InvalidContracts(f"no contract at {hex_address(to)} answers {name} as of "
                                   f"block {block}", name=name, address=hex_address(to),
                                   error=NO_CODE, block=block)
        try:
            return self.codec.decode_output(name, output)
        except Exception as exc:  # eth_abi raises several unrelated types on malformed data
            raise InvalidContracts(f"the contract at {hex_address(to)} answered {name} with "
                                   f"{len(output)} undecodable bytes", name=name,
                                   address=hex_address(to), error=str(exc)) from exc

    def logs_blocking(
        self,
        address: Address,
        from_block: int,
        to_block: int,
        topics: Sequence[Sequence[bytes] | None] = (),
    ) -> list[RawLog]:
        """The logs of `address` in blocks `from_block..to_block` (inclusive), in chain order.

        `topics[i]` is None (any) or a list of alternatives for topic i.
        """
        filter_params: dict[str, Any] = {
            "address": hex_address(address),
            "fromBlock": from_block,
            "toBlock": to_block,
        }
        if topics:
            filter_params["topics"] = [
                None if alternatives is None else ["0x" + t.hex() for t in alternatives]
                for alternatives in topics
            ]
        with self._reachable("eth_getLogs"):
            entries = self.w3.eth.get_logs(cast(Any, filter_params))
        logs = [_raw_log(entry) for entry in entries]
        logs.sort(key=lambda log: (log.block_number, log.log_index))
        return logs

    # Transactions

    def prepare_blocking(
        self,
        account: Account,
        tx_type: str,
        to: Address | None,
        data: bytes,
        value: int,
        nonce: int,
        chain_id: int,
    ) -> PreparedTx:
        """Preflight (estimateGas) and sign a transaction; TxReverted if it would revert.

        The preflight reports a revert with the contract's error before any gas is spent.
        """
        call: dict[str, Any] = {"from": account.checksum_address, "data": data, "value": value}
        if to is not None:
            call["to"] = hex_address(to)
        with self._reachable(f"eth_estimateGas {tx_type}"):
            try:
                estimate = int(self.w3.eth.estimate_gas(cast(Any, call)))
            except ContractLogicError as exc:
                raise self._reverted(tx_type, _revert_data(exc), None) from exc
            except Web3RPCError as exc:
                raise _refused(tx_type, account, exc) from exc
            except EthValidationError as exc:  # the embedded chain's way of saying the same
                raise _refused(tx_type, account, exc) from exc
            base_fee = int(self.w3.eth.get_block("latest").get("baseFeePerGas") or 0)
        transaction = dict(
            call,
            type=2,
            chainId=chain_id,
            nonce=nonce,
            gas=estimate + estimate * GAS_MARGIN_PERCENT // 100,
            # Twice the base fee keeps the transaction includable through several full blocks.
            maxFeePerGas=2 * base_fee + self.priority_fee,
            maxPriorityFeePerGas=self.priority_fee,
        )
        del transaction["from"]
        raw, tx_hash = account.sign_transaction(transaction)
        return PreparedTx(raw=raw, tx_hash=tx_hash, nonce=nonce, gas_limit=transaction["gas"])

    def deposit_fee_blocking(self, adjudicator: Address, sender: Address,
                             extra_gas: int = 0) -> int:
        """The most an ETH deposit's gas may cost `sender` now: the gas limit and fee cap
        `prepare_blocking` would give it (what the account must hold beside the deposit).
        `extra_gas` is added to the estimate (token deposits and their approvals)."""
        call = {"from": hex_address(sender), "to": hex_address(adjudicator), "value": 1,
                "data": self.codec.encode_call("deposit", os.urandom(32), 0, ETH, 1)}
        with self._reachable("eth_estimateGas deposit"):
            try:
                estimate = int(self.w3.eth.estimate_gas(cast(Any, call)))
            except (ContractLogicError, Web3RPCError, EthValidationError):
                estimate = FALLBACK_DEPOSIT_GAS  # an empty account cannot even be asked
            base_fee = int(self.w3.eth.get_block("latest").get("baseFeePerGas") or 0)
        estimate += extra_gas
        return (estimate + estimate * GAS_MARGIN_PERCENT // 100) * (2 * base_fee
                                                                      + self.priority_fee)

    def send_raw_blocking(self, tx_type: str, raw: bytes) -> bytes:
        """Hand a signed transaction to the node; its hash."""
        with self._reachable(f"eth_sendRawTransaction {tx_type}"):
            try:
                return bytes(self.w3.eth.send_raw_transaction(raw))
            except Web3RPCError as exc:
                raise _refused(tx_type, None, exc) from exc

    def receipt_blocking(self, tx_hash: bytes) -> RawReceipt | None:
        """The receipt of a mined transaction, or None while it is not mined."""
        with self._reachable("eth_getTransactionReceipt"):
            try:
                receipt = self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return None
        if receipt.get("blockNumber") is None:
            return None
        contract = receipt.get("contractAddress")
        return RawReceipt(
            tx_hash=bytes(receipt["transactionHash"]),
            block_number=int(receipt["blockNumber"]),
            status=int(receipt["status"]),
            gas_used=int(receipt["gasUsed"]),
            effective_gas_price=int(receipt["effectiveGasPrice"]),
            contract_address=to_address(contract) if contract else None,
            logs=tuple(_raw_log(entry) for entry in receipt["logs"]),
        )

    def explain_revert_blocking(
        self, account: Account, tx_type: str, to: Address | None, data: bytes, value: int,
        block_number: int, tx_hash: bytes,
    ) -> TxReverted:
        """The TxReverted for a transaction mined with status 0, its reason found by replay.

        The replay runs on the state before its block and, when that passes (a transaction
        earlier in the same block changed the outcome), on the state after it. Neither is the
        exact state the transaction saw; the reason is best effort, the revert itself is not.
        """
        call: dict[str, Any] = {"from": account.checksum_address, "data": data, "value": value}
        if to is not None:
            call["to"] = hex_address(to)
        for block in (max(block_number - 1, 0), block_number):
            with self._reachable(f"eth_call replay {tx_type}"):
                try:
                    self.w3.eth.call(cast(Any, call), block)
                except ContractLogicError as exc:
                    return self._reverted(tx_type, _revert_data(exc), tx_hash)
        return self._reverted(tx_type, b"", tx_hash)

    def _reverted(self, tx_type: str, data: bytes, tx_hash: bytes | None) -> TxReverted:
        error = self.codec.decode_error(data)
        name = error.name if error is not None else ("unknown" if data else "no reason given")
        where = f" (tx 0x{tx_hash.hex()})" if tx_hash is not None else " (preflight, not sent)"
        return TxReverted(
            f"{tx_type} reverted: {error if error is not None else name}{where}",
            txType=tx_type,
            error=name,
            args={k: _jsonable(v) for k, v in error.args.items()} if error is not None else {},
            txHash=None if tx_hash is None else "0x" + tx_hash.hex(),
        )

    # Decoding

    def decode_events(self, address: Address, logs: Sequence[RawLog]) -> tuple[ChainEvent, ...]:
        """The contract events among `logs` emitted by `address` (others are skipped)."""
        events = []
        for log in logs:
            if log.address != address:
                continue
            decoded = self.codec.decode_log(log.topics, log.data)
            if decoded is None:
                continue
            events.append(
                ChainEvent(
                    block_number=log.block_number,
                    log_index=log.log_index,
                    tx_hash=log.tx_hash,
                    name=decoded.name,
                    args=decoded.args,
                )
            )
        return tuple(events)

    def summarize(
        self, tx_type: str, receipt: RawReceipt, address: Address | None
    ) -> TxReceipt:
        """The TxReceipt of a successful transaction, with the contract's decoded events."""
        events = self.decode_events(address, receipt.logs) if address is not None else ()
        return TxReceipt(
            tx_type=tx_type,
            tx_hash=receipt.tx_hash,
            block_number=receipt.block_number,
            gas_used=receipt.gas_used,
            effective_gas_price=receipt.effective_gas_price,
            events=events,
            contract_address=receipt.contract_address,
        )

    # Node control (dev chains only: the embedded one, or anvil's `evm_*` methods)

    def rpc_blocking(self, method: str, params: Sequence[Any] = ()) -> Any:
        """A raw JSON-RPC request; the result, or ProtocolError."""
        with self._reachable(method):
            response = self.w3.provider.make_request(cast(Any, method), list(params))
        if "error" in response:
            raise ProtocolError(f"{method} failed: {response['error']}", method=method)
        return response.get("result")

    def advance_time_blocking(self, seconds: int) -> int:
        """Mine a block `seconds` after the latest; its timestamp."""
        if self.devchain is not None:
            return self.devchain.advance_time(seconds)
        self.rpc_blocking("evm_increaseTime", [seconds])
        self.rpc_blocking("evm_mine", [])
        return self.block_timestamp_blocking("latest")

    def set_automine_blocking(self, enabled: bool) -> None:
        """Mine each transaction at once, or leave them pending until `mine_blocking`."""
        if self.devchain is not None:
            self.devchain.set_automine(enabled)
        else:
            self.rpc_blocking("evm_setAutomine", [enabled])

    def mine_blocking(self) -> None:
        """Mine one block with the pending transactions."""
        if self.devchain is not None:
            self.devchain.mine()
        else:
            self.rpc_blocking("evm_mine", [])


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    return value

