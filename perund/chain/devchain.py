"""The dev chain's fixed facts: its default chain ID and its funded dev accounts.

The dev accounts' private keys are `keccak256("perund-dev-<i>")`: deterministic, so a restart,
`perund generate` and the tests all see the same funded accounts. They are public knowledge:
never use them on a real chain.

The in-process chain that funds them for the fast tests is `perund.chain.pyevm` (eth-tester and
py-evm take about a second to import: the node, which runs anvil, never loads them).
"""

from __future__ import annotations

from eth_hash.auto import keccak

DEFAULT_DEV_CHAIN_ID = 1337
"""The embedded chain's default ID (the usual one for local dev chains, not anvil's 31337)."""
DEV_ACCOUNT_COUNT = 10
DEV_BALANCE = 1_000_000 * 10**18
"""Each dev account's genesis balance: 1,000,000 ETH."""
EMBEDDED_URL = "embedded://devchain"
"""What error messages and `node_getConfig` show as the embedded chain's URL."""


def dev_private_key(index: int) -> bytes:
    """The private key of dev account `index`: keccak256("perund-dev-<index>")."""
    if index < 0:
        raise ValueError("dev account indexes start at 0")
    return keccak(f"perund-dev-{index}".encode())


def dev_private_keys(count: int = DEV_ACCOUNT_COUNT) -> tuple[bytes, ...]:
    """The first `count` dev accounts' private keys."""
    return tuple(dev_private_key(i) for i in range(count))
