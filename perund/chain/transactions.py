"""Building, sending and following transactions: the preflight (gas estimate, base fee and
nonce in one batch), signing, replacements with higher fees, the node's refusals, receipts, and
the reason of a revert found by replay.

`TransactionCalls` is the part of `perund.chain.client.ChainClient` that sends: it blocks and
runs only on the chain thread pool, where `perund.chain.sender.TransactionSender` calls it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from perund.chain import jsonrpc
from perund.chain.account import Account, Eip1559Transaction
from perund.chain.jsonrpc import Answer, hex_data, hex_quantity
from perund.chain.node_rpc import NodeRpc, RawLog
from perund.chain.reverts import is_revert, revert_data
from perund.channel.types import ETH, Address
from perund.errors import ChainRpcError, InsufficientFunds, ProtocolError, TxReverted

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


class TransactionCalls(NodeRpc):
    """The transaction half of the chain client; every method blocks."""

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
