"""What a node's error for an eth_call or eth_estimateGas says about a revert: whether the
contract reverted (rather than the node refusing the request), and the revert data it gave.
Nodes differ in where they put it (geth, anvil, Erigon, hosted gateways); these rules are the
ones web3 applies."""

from __future__ import annotations

from collections.abc import Mapping

from perund.errors import ChainRpcError

_SELECTOR_ERROR_STRING = "0x08c379a0"
_SELECTOR_PANIC = "0x4e487b71"
_SELECTOR_OFFCHAIN_LOOKUP = "0x556f1830"


def is_revert(error: ChainRpcError) -> bool:
    """Whether an eth_call's or eth_estimateGas's error says the contract reverted (rather than
    that the node refused the request). The rules nodes follow (geth's code 3, the revert data
    or reason in `data`, "execution reverted" in the message), as web3 applies them."""
    data, message = error.rpc_data, error.rpc_message
    if error.has_data and data is None:
        return True
    if isinstance(data, Mapping) and message:
        return True
    if isinstance(data, str):
        if data.startswith("Reverted ") or data[:10] in (_SELECTOR_PANIC,
                                                         _SELECTOR_OFFCHAIN_LOOKUP):
            return True
        if len(data) >= 10 and data[:10] != _SELECTOR_ERROR_STRING:
            return True  # a custom error
    return bool(message) and (error.rpc_code == 3 or "execution reverted" in message)


def revert_data(error: ChainRpcError) -> bytes:
    """The contract's revert data in a revert error (empty when the node gave none)."""
    data = error.rpc_data
    if isinstance(data, Mapping):  # some nodes nest it: {"data": "0x..."}
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return b""
    return b""
