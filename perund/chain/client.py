"""The blocking half of the chain backend: JSON-RPC calls that run only on the chain thread pool.

Every public method ends in `_blocking`, takes and returns plain data (bytes, ints, frozen
dataclasses) and raises only `PerundError`s for conditions a caller handles (an unreachable node,
a revert, a malformed reply). Nothing here touches Twisted; `perund.chain.backend` runs these
methods in its pool and hands Deferreds to the reactor side. The requests go through a
`perund.chain.jsonrpc.Transport` (HTTP for a node, an in-process adapter for the test chain);
every reply is decoded here from the JSON-RPC format and checked on the way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from perund.chain import jsonrpc
from perund.chain.abi import ContractCodec
from perund.chain.account import Account, Eip1559Transaction
from perund.chain.jsonrpc import Answer, Transport, block_tag, hex_data, hex_quantity
from perund.chain.results import ChainEvent, TxReceipt
from perund.chain.reverts import is_revert, revert_data
from perund.channel.types import ETH, Address, hex_address
from perund.errors import (
    ChainNotReachable,
    ChainRpcError,
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
"""The `error` of the InvalidContracts raised when a call finds no contract (at that block)."""

CALL_BATCH = 500
"""View calls per JSON-RPC batch: node operators cap batches (geth at 1,000 by default)."""

DEFAULT_PRIORITY_FEE = 10**9
"""1 gwei tip: enough on dev chains and on quiet public ones."""

GAS_MARGIN_PERCENT = 25
"""Gas limit above the estimate: the estimate is taken on the latest block, the transaction runs
on the next one. Unused gas is refunded, so the margin costs nothing."""

REPLACEMENT_BUMP_PERCENT = 25
"""How much more a replacement offers of each fee (geth takes one at 10 % more)."""

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
class Preflight:
    """What signing a transaction needs, read in one batch (`preflight_blocking`): its gas
    limit, the base fee, and the account's `pending` nonce as of block `head`."""

    gas_limit: int
    base_fee: int
    pending_nonce: int
    head: int


@dataclass(frozen=True, slots=True)
class PreparedTx:
    """A signed transaction ready to send, with what the preflight learned."""

    raw: bytes
    tx_hash: bytes
    nonce: int
    gas_limit: int
    transaction: Eip1559Transaction | None = None
    """What was signed (to sign a replacement with higher fees: `replacement_blocking`)."""


def _refused(tx_type: str, account: Account | None, exc: ChainRpcError) -> ProtocolError:
    """The node's refusal of a transaction as our error: InsufficientFunds when the account
    cannot pay for it (it may be topped up and the transaction sent again)."""
    message = exc.rpc_message
    if "insufficient funds" in message.lower() or "cannot afford" in message.lower():
        who = "the account" if account is None else f"account {account.checksum_address}"
        return InsufficientFunds(f"{who} cannot pay for the {tx_type} transaction (value and "
                                 f"gas): top it up", txType=tx_type,
                                 account=None if account is None else account.checksum_address)
    return ProtocolError(f"the node refused the {tx_type} transaction: {message[:300]}",
                         txType=tx_type)


def _result(answer: Answer) -> Any:
    """A batch answer's result; its error raised."""
    if answer.error is not None:
        raise answer.error
    return answer.result


class ChainClient:
    """One node's JSON-RPC transport and the contract codec; every method blocks.

    Thread-safety is the transport's: the HTTP one gives each pool thread its own connection;
    the embedded chain's may be used from one thread only (its pool has one).
    """

    def __init__(
        self,
        transport: Transport,
        codec: ContractCodec,
        *,
        priority_fee: int = DEFAULT_PRIORITY_FEE,
        devchain: DevChain | None = None,
    ) -> None:
        self.transport = transport
        self.devchain = devchain
        self.url = transport.url
        self.codec = codec
        self.priority_fee = priority_fee

    @contextlib.contextmanager
    def _reachable(self, what: str) -> Iterator[None]:
        """Turn transport failures (OSErrors: refused, reset, timed out) into
        ChainNotReachable."""
        try:
            yield
        except PerundError:
            raise
        except OSError as exc:
            raise ChainNotReachable(
                f"the chain at {self.url} is not reachable ({what}: {exc})", chainUrl=self.url
            ) from exc

    def _request(self, method: str, params: Sequence[Any] = ()) -> Any:
        """The result of one JSON-RPC call (ChainRpcError for the node's error object)."""
        with self._reachable(method):
            return self.transport.request(method, params)

    def _quantity(self, value: Any, method: str, what: str) -> int:
        return jsonrpc.quantity(value, self.url, method, what)

    def _data(self, value: Any, method: str, what: str, size: int | None = None) -> bytes:
        return jsonrpc.data_bytes(value, self.url, method, what, size)

    def _block(self, block: BlockId) -> Mapping[str, Any] | None:
        """The header of `block` (no transactions), or None if there is no such block."""
        header = self._request("eth_getBlockByNumber", [block_tag(block), False])
        if header is not None and not isinstance(header, Mapping):
            raise jsonrpc.malformed(self.url, "eth_getBlockByNumber", "not a block object")
        return header

    def _existing_block(self, block: BlockId) -> Mapping[str, Any]:
        header = self._block(block)
        if header is None:
            raise ProtocolError(f"the chain at {self.url} has no block {block}",
                                chainUrl=self.url, block=block)
        return header

    def _base_fee(self) -> int:
        """The latest block's base fee (0 on a chain without EIP-1559)."""
        return self._base_fee_of(self._existing_block("latest"))

    def _base_fee_of(self, header: Mapping[str, Any]) -> int:
        """A block header's base fee (0 on a chain without EIP-1559)."""
        fee = header.get("baseFeePerGas")
        return 0 if fee is None else self._quantity(fee, "eth_getBlockByNumber", "baseFeePerGas")

    # Reads

    def chain_id_blocking(self) -> int:
        """The node's chain ID (eth_chainId, never cached)."""
        return self._quantity(self._request("eth_chainId"), "eth_chainId", "the chain ID")

    def block_number_blocking(self) -> int:
        """The number of the latest block."""
        return self._quantity(self._request("eth_blockNumber"), "eth_blockNumber",
                              "the block number")

    def block_hash_blocking(self, number: int) -> bytes | None:
        """The hash of block `number` on the chain as it is now; None if there is no such
        block (yet)."""
        header = self._block(number)
        if header is None:
            return None
        return self._data(header.get("hash"), "eth_getBlockByNumber", "the block hash", 32)

    def block_timestamp_blocking(self, block: BlockId = "latest") -> int:
        """The Unix timestamp of `block`: the chain's clock, which the contract's timeouts use."""
        return self._quantity(self._existing_block(block).get("timestamp"),
                              "eth_getBlockByNumber", "the block timestamp")

    def balance_blocking(self, address: Address, block: BlockId = "latest") -> int:
        """The ether balance of `address`, in wei."""
        return self._quantity(self._request("eth_getBalance", [hex_data(address),
                                                               block_tag(block)]),
                              "eth_getBalance", "the balance")

    def code_blocking(self, address: Address) -> bytes:
        """The runtime code at `address` (empty for an account without code)."""
        return self._data(self._request("eth_getCode", [hex_data(address), "latest"]),
                          "eth_getCode", "the code")

    def pending_nonce_blocking(self, address: Address) -> int:
        """The next nonce of `address`, counting transactions still in the node's pool."""
        return self._nonce(address, "pending")

    def mined_nonce_blocking(self, address: Address) -> int:
        """How many transactions of `address` the latest block includes (its next nonce,
        not counting the pool)."""
        return self._nonce(address, "latest")

    def _nonce(self, address: Address, block: str) -> int:
        return self._quantity(self._request("eth_getTransactionCount", [hex_data(address),
                                                                        block]),
                              "eth_getTransactionCount", "the nonce")

    def call_blocking(
        self, to: Address, name: str, *args: Any, block: BlockId = "latest",
        codec: ContractCodec | None = None, sender: Address | None = None,
    ) -> tuple[Any, ...]:
        """Call function `name` of the contract at `to` (the Adjudicator's ABI, or `codec`'s)
        without a transaction, from `sender` if given; its decoded outputs."""
        codec = codec or self.codec
        call: dict[str, Any] = {"to": hex_data(to),
                                "data": hex_data(codec.encode_call(name, *args))}
        if sender is not None:
            call["from"] = hex_data(sender)
        try:
            result = self._request("eth_call", [call, block_tag(block)])
        except ChainRpcError as exc:
            if is_revert(exc):
                raise self._reverted(name, revert_data(exc), None) from exc
            raise
        return self._decode_output(to, name, block, self._data(result, "eth_call", "the output"),
                                   codec)

    def _decode_output(self, to: Address, name: str, block: BlockId, output: bytes,
                       codec: ContractCodec) -> tuple[Any, ...]:
        if not output:
            # No code at `to` (at that block): a call to an account without code succeeds empty.
            raise InvalidContracts(f"no contract at {hex_address(to)} answers {name} as of "
                                   f"block {block}", name=name, address=hex_address(to),
                                   error=NO_CODE, block=block)
        try:
            return codec.decode_output(name, output)
        except Exception as exc:  # eth_abi raises several unrelated types on malformed data
            raise InvalidContracts(f"the contract at {hex_address(to)} answered {name} with "
                                   f"{len(output)} undecodable bytes", name=name,
                                   address=hex_address(to), error=str(exc)) from exc

    def succeeds_blocking(self, to: Address, data: bytes) -> bool:
        """Whether calling `to` with `data` would succeed now (simulated: no transaction)."""
        try:
            self._request("eth_call", [{"to": hex_data(to), "data": hex_data(data)}, "latest"])
        except ChainRpcError:
            return False
        return True

    def calls_blocking(
        self, to: Address, calls: Sequence[tuple[str, tuple[Any, ...]]],
        block: BlockId = "latest",
    ) -> list[tuple[Any, ...]]:
        """Several view calls `(name, args)` to the contract at `to`; their decoded outputs,
        in order. They go in JSON-RPC batches (a node with a thousand channels reads them all
        at start: one round trip per batch, not per call); to a node that refuses batches, one
        by one."""
        target = hex_data(to)
        tag = block_tag(block)
        outputs: list[tuple[Any, ...]] = []
        for first in range(0, len(calls), CALL_BATCH):
            chunk = calls[first:first + CALL_BATCH]
            requests = [("eth_call", [{"to": target,
                                       "data": hex_data(self.codec.encode_call(name, *args))},
                                      tag]) for name, args in chunk]
            for (name, _), answer in zip(chunk, self._batch(requests), strict=True):
                outputs.append(self._call_output(to, name, block, answer))
        return outputs

    def _call_output(self, to: Address, name: str, block: BlockId,
                     answer: Answer) -> tuple[Any, ...]:
        """The decoded output of one answer of a batch (an error as `call_blocking` raises)."""
        error = answer.error
        if error is not None:
            if is_revert(error):
                raise self._reverted(name, revert_data(error), None)
            raise InvalidContracts(f"the chain refused a call of {name} at {hex_address(to)}: "
                                   f"{error.rpc_message[:200]}", name=name,
                                   address=hex_address(to))
        output = self._data(answer.result, "eth_call", "the output")
        return self._decode_output(to, name, block, output, self.codec)

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
            "address": hex_data(address),
            "fromBlock": hex_quantity(from_block),
            "toBlock": hex_quantity(to_block),
        }
        if topics:
            filter_params["topics"] = [
                None if alternatives is None else [hex_data(t) for t in alternatives]
                for alternatives in topics
            ]
        entries = self._request("eth_getLogs", [filter_params])
        if not isinstance(entries, list):
            raise jsonrpc.malformed(self.url, "eth_getLogs", "not a list of logs")
        logs = [self._raw_log(entry, "eth_getLogs") for entry in entries]
        logs.sort(key=lambda log: (log.block_number, log.log_index))
        return logs

    def _raw_log(self, entry: Any, method: str) -> RawLog:
        def get(key: str) -> Any:
            return jsonrpc.field(entry, key, self.url, method)

        topics = get("topics")
        if not isinstance(topics, list):
            raise jsonrpc.malformed(self.url, method, "a log's topics are not a list")
        return RawLog(
            address=jsonrpc.address(get("address"), self.url, method, "a log's address"),
            topics=tuple(self._data(topic, method, "a log topic", 32) for topic in topics),
            data=self._data(get("data"), method, "a log's data"),
            block_number=self._quantity(get("blockNumber"), method, "a log's block number"),
            log_index=self._quantity(get("logIndex"), method, "a log's index"),
            tx_hash=self._data(get("transactionHash"), method, "a log's transaction hash", 32),
        )

    # Transactions

    def preflight_blocking(self, account: Account, tx_type: str, to: Address | None,
                           data: bytes, value: int) -> Preflight:
        """Preflight a transaction (estimateGas: TxReverted, with the contract's error, before
        any gas is spent) and read what signing it needs: the base fee, and the account's
        `pending` nonce with the head it came from. In one batch, so the nonce costs no round
        trip of its own."""
        call: dict[str, Any] = {"from": hex_data(account.address), "data": hex_data(data),
                                "value": hex_quantity(value)}
        if to is not None:
            call["to"] = hex_data(to)
        estimated, head, nonce = self._batch([
            ("eth_estimateGas", [call, "latest"]), ("eth_getBlockByNumber", ["latest", False]),
            ("eth_getTransactionCount", [hex_data(account.address), "pending"])])
        if estimated.error is not None:
            if is_revert(estimated.error):
                raise self._reverted(tx_type, revert_data(estimated.error), None) \
                    from estimated.error
            raise _refused(tx_type, account, estimated.error) from estimated.error
        header = _result(head)
        if not isinstance(header, Mapping):
            raise jsonrpc.malformed(self.url, "eth_getBlockByNumber", "not a block object")
        method = "eth_getBlockByNumber"
        estimate = self._quantity(estimated.result, "eth_estimateGas", "the gas estimate")
        return Preflight(
            gas_limit=estimate + estimate * GAS_MARGIN_PERCENT // 100,
            base_fee=self._base_fee_of(header),
            pending_nonce=self._quantity(_result(nonce), "eth_getTransactionCount", "the nonce"),
            head=self._quantity(jsonrpc.field(header, "number", self.url, method), method,
                                "the block number"))

    def sign(self, account: Account, to: Address | None, data: bytes, value: int,
             preflight: Preflight, nonce: int, chain_id: int) -> PreparedTx:
        """The transaction `preflight` was read for, signed with `nonce` (no chain call)."""
        transaction = Eip1559Transaction(
            chain_id=chain_id, nonce=nonce, max_priority_fee_per_gas=self.priority_fee,
            # Twice the base fee keeps the transaction includable through several full blocks.
            max_fee_per_gas=2 * preflight.base_fee + self.priority_fee,
            gas=preflight.gas_limit, to=to, value=value, data=data)
        raw, tx_hash = account.sign_transaction(transaction)
        return PreparedTx(raw=raw, tx_hash=tx_hash, nonce=nonce, gas_limit=transaction.gas,
                          transaction=transaction)

    def pool_view_blocking(self, address: Address, tx_hash: bytes) -> tuple[int, bool]:
        """`address`'s `pending` nonce, and whether the node still knows `tx_hash` (mined, or
        in its pool, queued too): one batch."""
        nonce, found = self._batch([
            ("eth_getTransactionCount", [hex_data(address), "pending"]),
            ("eth_getTransactionByHash", [hex_data(tx_hash)])])
        transaction = _result(found)
        if transaction is not None and not isinstance(transaction, Mapping):
            raise jsonrpc.malformed(self.url, "eth_getTransactionByHash", "not a transaction")
        return (self._quantity(_result(nonce), "eth_getTransactionCount", "the nonce"),
                transaction is not None)

    def _batch(self, requests: Sequence[tuple[str, Sequence[Any]]]) -> list[Answer]:
        """The answers to a few requests: one batch, or one by one to a node that takes no
        batches (an error object is kept in its answer, not raised)."""
        with self._reachable(requests[0][0] + " batch"):
            answers = self.transport.batch(requests)
        if answers is not None:
            return answers
        singles = []
        for method, params in requests:
            try:
                singles.append(Answer(result=self._request(method, params)))
            except ChainRpcError as exc:
                singles.append(Answer(error=exc))
        return singles

    def replacement_blocking(self, account: Account, prepared: PreparedTx) -> PreparedTx:
        """The same transaction (nonce, gas, call) with higher fees, for one that was not
        mined in time: at least `REPLACEMENT_BUMP_PERCENT` more of both fees (what nodes ask
        of a replacement), and at least what a new transaction would offer now."""
        old = prepared.transaction
        assert old is not None, "only a prepared transaction is replaced"
        tip = max(old.max_priority_fee_per_gas * (100 + REPLACEMENT_BUMP_PERCENT) // 100,
                  self.priority_fee)
        fee_cap = max(old.max_fee_per_gas * (100 + REPLACEMENT_BUMP_PERCENT) // 100,
                      2 * self._base_fee() + tip)
        transaction = replace(old, max_priority_fee_per_gas=tip, max_fee_per_gas=fee_cap)
        raw, tx_hash = account.sign_transaction(transaction)
        return PreparedTx(raw=raw, tx_hash=tx_hash, nonce=old.nonce, gas_limit=old.gas,
                          transaction=transaction)

    def deposit_fee_blocking(self, adjudicator: Address, sender: Address,
                             extra_gas: int = 0) -> int:
        """The most an ETH deposit's gas may cost `sender` now: the gas limit and fee cap
        `preflight_blocking` and `sign` would give it (what the account must hold beside the
        deposit). `extra_gas` is added to the estimate (token deposits and their approvals)."""
        call = {"from": hex_data(sender), "to": hex_data(adjudicator), "value": hex_quantity(1),
                "data": hex_data(self.codec.encode_call("deposit", os.urandom(32), 0, ETH, 1))}
        try:
            estimate = self._quantity(self._request("eth_estimateGas", [call, "latest"]),
                                      "eth_estimateGas", "the gas estimate")
        except ChainRpcError:
            estimate = FALLBACK_DEPOSIT_GAS  # an empty account cannot even be asked
        base_fee = self._base_fee()
        estimate += extra_gas
        return (estimate + estimate * GAS_MARGIN_PERCENT // 100) * (2 * base_fee
                                                                      + self.priority_fee)

    def send_raw_blocking(self, tx_type: str, raw: bytes) -> bytes:
        """Hand a signed transaction to the node; its hash."""
        try:
            tx_hash = self._request("eth_sendRawTransaction", [hex_data(raw)])
        except ChainRpcError as exc:
            raise _refused(tx_type, None, exc) from exc
        return self._data(tx_hash, "eth_sendRawTransaction", "the transaction hash")

    def receipt_blocking(self, tx_hash: bytes) -> RawReceipt | None:
        """The receipt of a mined transaction, or None while it is not mined."""
        method = "eth_getTransactionReceipt"
        receipt = self._request(method, [hex_data(tx_hash)])
        if receipt is None:
            return None
        if not isinstance(receipt, Mapping):
            raise jsonrpc.malformed(self.url, method, "not a receipt object")
        if receipt.get("blockNumber") is None:
            return None  # some nodes answer for a pending transaction

        def get(key: str) -> Any:
            return jsonrpc.field(receipt, key, self.url, method)

        logs = get("logs")
        if not isinstance(logs, list):
            raise jsonrpc.malformed(self.url, method, "the receipt's logs are not a list")
        answered = self._data(get("transactionHash"), method, "the transaction hash", 32)
        if answered != tx_hash:
            # Another transaction's receipt (a mixed-up cache or proxy): its events would be
            # taken for our payouts.
            raise jsonrpc.malformed(self.url, method, "the receipt of another transaction")
        contract = receipt.get("contractAddress")
        return RawReceipt(
            tx_hash=answered,
            block_number=self._quantity(get("blockNumber"), method, "the block number"),
            status=self._quantity(get("status"), method, "the status"),
            gas_used=self._quantity(get("gasUsed"), method, "the gas used"),
            effective_gas_price=self._quantity(get("effectiveGasPrice"), method,
                                               "the effective gas price"),
            contract_address=None if contract is None else jsonrpc.address(
                contract, self.url, method, "the contract address"),
            logs=tuple(self._raw_log(entry, method) for entry in logs),
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
        call: dict[str, Any] = {"from": hex_data(account.address), "data": hex_data(data),
                                "value": hex_quantity(value)}
        if to is not None:
            call["to"] = hex_data(to)
        for block in (max(block_number - 1, 0), block_number):
            try:
                self._request("eth_call", [call, hex_quantity(block)])
            except ChainRpcError as exc:
                if is_revert(exc):
                    return self._reverted(tx_type, revert_data(exc), tx_hash)
                # A node that cannot replay (pruned state): the reason stays unknown.
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
        """A raw JSON-RPC request; the result, or ProtocolError (ChainRpcError for the node's
        error)."""
        return self._request(method, params)

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

