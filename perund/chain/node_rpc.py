"""The ground under the chain client: one node's JSON-RPC requests and batches with their
failures turned into our errors, the reply values decoded and checked, block headers and the
base fee, and a revert's TxReverted.

`NodeRpc` is the base of `perund.chain.client.ChainClient` (through
`perund.chain.transactions.TransactionCalls`): what both the reads and the transactions stand
on. Like them it blocks and runs only on the chain thread pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from perund.chain import jsonrpc
from perund.chain.abi import ContractCodec
from perund.chain.jsonrpc import Answer, Transport, block_tag
from perund.channel.types import Address
from perund.errors import ChainNotReachable, ChainRpcError, PerundError, ProtocolError, TxReverted

if TYPE_CHECKING:
    from perund.chain.pyevm import DevChain

BlockId = int | Literal["latest", "pending", "earliest"]


@dataclass(frozen=True, slots=True)
class RawLog:
    """A log as the node returned it, in plain data."""

    address: Address
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    log_index: int
    tx_hash: bytes


class NodeRpc:
    """Requests to one node through its transport, and the decoding every answer needs.

    The attributes are set by `ChainClient.__init__`. Thread-safety is the transport's.
    """

    transport: Transport
    url: str
    codec: ContractCodec
    priority_fee: int
    """The tip every transaction offers (wei a gas)."""
    devchain: DevChain | None
    """The in-process test chain behind the transport, if that is the chain."""

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


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    return value

