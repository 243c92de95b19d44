"""A node with a token on anvil, in process: proposals in an asset the node does not know can
only be rejected, and a chain that lost a token channel's contract names the token amounts at
stake by symbol."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytest_twisted
import yaml
from twisted.internet.defer import Deferred

from perund.chain.anvil import Anvil
from perund.channel.proposal import OpenRequest
from perund.channel.types import ETH, Address, to_address
from perund.cli.generate import Generated
from perund.config import load_node_config
from perund.errors import ChainMismatch, FailedPrecondition, PeerRejected
from perund.node import NodeService
from perund.node_api import NodeAPI
from perund.session.notices import Notice, ProposalNotice
from tests.node.test_sessions import ETHER, auto_answer, open_pair, running
from tests.test_node import NotRunningReactor


def token_of(node: NodeService) -> Address:
    return node.currencies.by_symbol("PRN").asset


@pytest.mark.anvil
@pytest_twisted.ensureDeferred
async def test_a_proposal_in_an_unknown_asset_can_only_be_rejected(
        anvil_token_setup: Generated) -> None:
    async with running(load_node_config(anvil_token_setup.node_config)) as node:
        alice, bob = await open_pair(node, anvil_token_setup)
        proposals: Deferred[ProposalNotice] = Deferred()

        def observe(notice: Notice) -> None:
            if isinstance(notice, ProposalNotice) and not proposals.called:
                proposals.callback(notice)

        bob.client.observers.append(observe)
        stranger = Address(os.urandom(20))  # a token this node was not configured with
        bob_address = alice.contacts.by_alias("bob").off_chain_address
        opening = alice.client.open_channel(
            OpenRequest(bob_address, (ETH, stranger), ((ETHER, 0), (0, 5)), 600))
        notice = await proposals
        api = NodeAPI(node)
        with pytest.raises(FailedPrecondition) as caught:
            await api.channel_respond_proposal(bytes.fromhex(bob.id),
                                               notice.proposal.proposal_id, True)
        assert "no asset of this node's" in caught.value.message
        assert caught.value.data["asset"].lower() == "0x" + stranger.hex()
        await api.channel_respond_proposal(bytes.fromhex(bob.id), notice.proposal.proposal_id,
                                           False)
        with pytest.raises(PeerRejected):
            await opening
        # The node's own token is fine; its balances are listed beside ETH.
        balance = await api.session_balance(bytes.fromhex(alice.id))
        assert set(balance.balances) == {ETH, token_of(node)}


@pytest.mark.anvil
@pytest_twisted.ensureDeferred
async def test_a_chain_without_the_contract_names_the_tokens_at_stake(
        anvil_token_setup: Generated, tmp_path: Path) -> None:
    async with running(load_node_config(anvil_token_setup.node_config)) as node:
        alice, bob = await open_pair(node, anvil_token_setup)
        auto_answer(bob)
        token = token_of(node)
        bob_address = alice.contacts.by_alias("bob").off_chain_address
        channel = await alice.client.open_channel(
            OpenRequest(bob_address, (ETH, token), ((ETHER, 0), (15 * ETHER, 10 * ETHER // 4)),
                        600))
        assert await node.chain.holdings(channel.channel_id, token) == (15 * ETHER,
                                                                         10 * ETHER // 4)

    with Anvil() as fresh:
        document = yaml.safe_load(anvil_token_setup.node_config.read_text())
        document["chain"]["url"] = fresh.url
        anvil_token_setup.node_config.write_text(yaml.safe_dump(document))
        again = NodeService(NotRunningReactor(), load_node_config(anvil_token_setup.node_config))
        assert to_address(document["chain"]["assets"]["PRN"]["address"]) == token
        again.startService()
        try:
            with pytest.raises(ChainMismatch) as caught:
                await again.ready
        finally:
            await again.stopService()
    message = caught.value.message
    assert f"channel 0x{channel.channel_id.hex()[:8]}…" in message
    assert "1 ETH, 17.5 PRN" in message, message
