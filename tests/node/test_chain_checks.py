"""A node pointed at a chain that lacks the contract its channels were funded on (a fresh anvil
in place of the old one) refuses to start, and says which channels and amounts are at stake."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor

from perund.chain.anvil import Anvil
from perund.channel.proposal import OpenRequest
from perund.channel.types import ETH
from perund.cli.generate import Generated
from perund.config import load_node_config
from perund.errors import ChainMismatch
from perund.node import NodeService
from tests.node.test_sessions import ETHER, auto_answer, open_pair
from tests.test_node import NotRunningReactor


@pytest.mark.anvil
@pytest_twisted.ensureDeferred
async def test_a_chain_without_the_contract_names_the_channels_at_stake(
        anvil_setup: Generated, tmp_path: Path) -> None:
    node = NodeService(reactor, load_node_config(anvil_setup.node_config))
    node.startService()
    await node.ready
    try:
        alice, bob = await open_pair(node, anvil_setup)
        auto_answer(bob)
        bob_address = alice.contacts.by_alias("bob").off_chain_address
        channel = await alice.client.open_channel(
            OpenRequest(bob_address, (ETH,), ((3 * ETHER, ETHER),), 600))
    finally:
        await node.stopService()

    with Anvil() as fresh:
        document = yaml.safe_load(anvil_setup.node_config.read_text())
        document["chain"]["url"] = fresh.url
        anvil_setup.node_config.write_text(yaml.safe_dump(document))
        # Not the running reactor: a failed start must not stop the tests' reactor.
        again = NodeService(NotRunningReactor(), load_node_config(anvil_setup.node_config))
        again.startService()
        try:
            with pytest.raises(ChainMismatch) as caught:
                await again.ready
        finally:
            await again.stopService()
    message = caught.value.message
    assert "chain.adjudicator: no contract at this address" in message
    assert f"channel 0x{channel.channel_id.hex()[:8]}…" in message and "4 ETH" in message
    assert str(anvil_setup.users[0].session_file) in message
    assert caught.value.data["channels"]
