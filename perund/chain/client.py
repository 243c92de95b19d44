"""The blocking half of the chain backend: JSON-RPC calls that run only on the chain thread pool.

Every public method ends in `_blocking`, takes and returns plain data (bytes, ints, frozen
dataclasses) and raises only `PerundError`s for conditions a caller handles (an unreachable node,
a revert, a malformed reply). Nothing here touches Twisted; `perund.chain.backend` runs these
methods in its pool and hands Deferreds to the reactor side. The requests go through a
`perund.chain.jsonrpc.Transport` (HTTP for a node, an in-process adapter for the test chain);
every reply is decoded from the JSON-RPC format and checked on the way.

`ChainClient` is built in layers, one module each: `perund.chain.node_rpc` (requests, batches,
value decoding, headers and the base fee), `perund.chain.transactions` (preflight, signing,
replacements, sending, receipts, revert reasons), and this one: the reads (chain, blocks,
balances, nonces, contract view calls one by one or batched, logs), event decoding and a dev
chain's controls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from perund.chain import jsonrpc
from perund.chain.abi import ContractCodec
from perund.chain.jsonrpc import Answer, Transport, block_tag, hex_data, hex_quantity
from perund.chain.node_rpc import BlockId, RawLog
from perund.chain.results import ChainEvent, TxReceipt
from perund.chain.reverts import is_revert, revert_data
from perund.chain.transactions import DEFAULT_PRIORITY_FEE, RawReceipt, TransactionCalls
from perund.channel.types import Address, hex_address
from perund.errors import ChainRpcError, InvalidContracts

if TYPE_CHECKING:
    from perund.chain.pyevm import DevChain

NO_CODE = "no code"
"""The `error` of the InvalidContracts raised when a call finds no contract (at that block)."""

CALL_BATCH = 500
"""View calls per JSON-RPC batch: node operators cap batches (geth at 1,000 by default)."""


class ChainClient(TransactionCalls):
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
