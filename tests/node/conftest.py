"""Fixtures of the node tests: generated node and session configs, on either chain."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor

from perund.chain.account import Account
from perund.chain.anvil import Anvil, free_port
from perund.chain.backend import ChainBackend
from perund.chain.embedded import TEST_TOKEN_DECIMALS, TEST_TOKEN_SYMBOL, deploy_test_token
from perund.channel.types import hex_address
from perund.cli.generate import Generated, anvil_dev_key, generate


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    with Anvil() as node:
        yield node


async def deploy(anvil: Anvil) -> str:
    """A fresh Adjudicator on `anvil`, deployed from its account 0; its address."""
    backend = ChainBackend(reactor, url=anvil.url, chain_id=anvil.chain_id)
    backend.startService()
    try:
        await backend.connect()
        return hex_address(await backend.deploy_adjudicator(Account(anvil.private_keys[0])))
    finally:
        backend.stopService()


@pytest_twisted.async_fixture
async def anvil_setup(anvil: Anvil, tmp_path: Path) -> Generated:
    """`perund generate` output for a node on anvil, with its own Adjudicator."""
    return generate(tmp_path, chain_url=anvil.url, chain_id=anvil.chain_id,
                    adjudicator=await deploy(anvil), api_port=free_port(),
                    comm_ports=(free_port(), free_port()))


TOKEN_SUPPLY = 1_000 * 10**18
"""What the token setups mint to alice's and bob's on-chain accounts."""


async def deploy_token(anvil: Anvil) -> str:
    """The test token PRN on `anvil`, from its account 0, with TOKEN_SUPPLY for the accounts
    `perund generate` gives alice and bob there; its address."""
    backend = ChainBackend(reactor, url=anvil.url, chain_id=anvil.chain_id)
    backend.startService()
    try:
        await backend.connect()
        return hex_address(await deploy_test_token(
            backend, Account(anvil.private_keys[0]),
            [Account(anvil_dev_key(i)).address for i in (1, 2)], TOKEN_SUPPLY))
    finally:
        backend.stopService()


@pytest_twisted.async_fixture
async def anvil_token_setup(anvil: Anvil, tmp_path: Path) -> Generated:
    """`perund generate` output for a node on anvil, with its own Adjudicator and the test
    token PRN in `chain.assets`."""
    adjudicator = await deploy(anvil)
    token = await deploy_token(anvil)
    return generate(tmp_path, chain_url=anvil.url, chain_id=anvil.chain_id,
                    adjudicator=adjudicator, api_port=free_port(),
                    comm_ports=(free_port(), free_port()),
                    assets={TEST_TOKEN_SYMBOL: (token, TEST_TOKEN_DECIMALS)})


@pytest.fixture(params=["embedded", "anvil"])
def chain_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def setup(chain_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Generated:
    """`perund generate` output on the embedded chain or on anvil."""
    if chain_kind == "anvil":
        generated: Generated = request.getfixturevalue("anvil_setup")
        return generated
    return generate(tmp_path, api_port=free_port(), comm_ports=(free_port(), free_port()))


def two_nodes(setup: Generated) -> tuple[Path, Path]:
    """Split the generated one-node setup into two node configs, one per user."""
    alice_config = setup.node_config
    node = yaml.safe_load(alice_config.read_text())
    node["api"]["listen"] = f"tcp:{free_port()}:interface=127.0.0.1"
    node["data_dir"] = "data-bob"
    bob_config = alice_config.with_name("bob.yaml")
    bob_config.write_text(yaml.safe_dump(node))
    return alice_config, bob_config
