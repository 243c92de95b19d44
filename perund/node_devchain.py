"""The embedded dev chain inside the node: started on its saved state with its Adjudicator
and test token, and watched, so that its process ending under the node is said at once.

Without `chain.url` the node runs anvil itself (`EmbeddedChain`, state in
`data_dir/devchain`); this module is what the node does with it at start and while it runs.
"""

from __future__ import annotations

from typing import Any, Final

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from perund.chain.backend import ChainBackend
from perund.chain.embedded import EmbeddedChain
from perund.channel.types import hex_address
from perund.config import NodeConfig
from perund.errors import InvalidContracts

log = Logger(namespace="perund.node")

DEVCHAIN_FOLDER: Final = "devchain"
"""The embedded chain's folder in data_dir."""

DEVCHAIN_CHECK: Final = 2.0
"""Seconds between looks at whether the embedded chain's process is still alive."""


async def start_embedded_chain(devchain: EmbeddedChain, chain: ChainBackend,
                               config: NodeConfig) -> int:
    """Start the embedded chain on its saved state and connect `chain` to it; the chain ID.
    On a new chain, fund the dev accounts and deploy the Adjudicator (dev account 0, so always
    at the same address); on a saved one, check the Adjudicator is still there. A chain
    without the test token PRN gets it."""
    if config.fresh_chain:
        devchain.reset()
    chain.use_url(await devchain.start())
    configured = config.chain.adjudicator
    if not devchain.fresh:
        chain.adjudicator = configured or devchain.recorded_adjudicator()
        if chain.adjudicator is None:
            raise InvalidContracts(
                f"the embedded chain in {devchain.folder} has no record of its Adjudicator; "
                "start afresh with --fresh-chain (its channels are lost)",
                name="Adjudicator", address=None, error="no record")
    chain_id = await chain.connect()
    if devchain.fresh:
        await chain.run_blocking(devchain.fund_dev_accounts_blocking)
        deployed = await chain.deploy_adjudicator(devchain.dev_account(0))
        if configured is not None and configured != deployed:
            raise InvalidContracts(
                f"the embedded chain deploys the Adjudicator at {hex_address(deployed)}, "
                f"not at the configured {hex_address(configured)}",
                name="Adjudicator", address=hex_address(configured),
                error="not the embedded chain's Adjudicator address")
        devchain.record(deployed)
    if devchain.recorded_test_token() is None:
        await devchain.add_test_token(chain)
    return chain_id


class ExitWatch:
    """Looks every `DEVCHAIN_CHECK` seconds whether the embedded chain's process is still
    alive, from its creation until `stop`, and says it once, and loudly, when it is not."""

    def __init__(self, reactor: Any, devchain: EmbeddedChain) -> None:
        self._devchain = devchain
        self._loop = LoopingCall(self._check)
        self._loop.clock = reactor
        self._loop.start(DEVCHAIN_CHECK, now=False)

    def stop(self) -> None:
        """No more looks."""
        if self._loop.running:
            self._loop.stop()

    def _check(self) -> None:
        status = self._devchain.exit_status()
        if status is None:
            return
        self.stop()
        log.critical(
            "the embedded dev chain (anvil) exited with status {status}: deposits, closes and "
            "disputes cannot go on-chain until the node is restarted. Restart it: the chain "
            "comes back from its last state save in {folder} (anything of the last seconds "
            "before the exit may be lost; the start says which channels, if any)",
            status=status, folder=self._devchain.folder)
