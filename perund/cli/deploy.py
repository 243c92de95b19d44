"""`perund deploy`: put the packaged Adjudicator on a chain, for nodes to use.

From a keystore account it deploys the Adjudicator of this perund version, says what it waits
for (the transaction, then the confirmations), checks that the code at the new address is the
packaged artifact's runtime code, prints the addresses, and writes them into a new node config
that a node starts with (`twistd -n perund --config FILE`). On a test network it can deploy the
test token PRN too (`--test-token`), minted to the deployer and to the accounts given, and
listed in the node config's `chain.assets`.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml
from twisted.internet.task import deferLater

from perund.chain.account import Account
from perund.chain.backend import ChainBackend
from perund.chain.embedded import TEST_TOKEN_DECIMALS, TEST_TOKEN_SYMBOL, deploy_test_token
from perund.chain.urls import shown_url
from perund.channel.types import Address, hex_address
from perund.errors import InvalidArgument, InvalidContracts, ResourceExists
from perund.keystore.v3 import PASSWORD_ENV, read_password, unlock_keystore
from perund.words import plural


@dataclass(frozen=True)
class Deployment:
    """What `perund deploy` put on the chain."""

    chain_id: int
    adjudicator: Address
    tx_hash: bytes
    gas_used: int
    block: int
    test_token: Address | None = None
    """The test token PRN, when asked for (`--test-token`)."""


TEST_TOKEN_SUPPLY = 1_000_000 * 10**TEST_TOKEN_DECIMALS
"""What `--test-token` mints to the deployer and to each `--mint-to` account."""

MAINNET_CHAIN_ID = 1


def password_for(password_file: str | None, environ: dict[str, str],
                 ask: Callable[[str], str] | None) -> str:
    """The keystore's password: its file, PERUND_PASSWORD, or asked on the terminal."""
    if password_file is not None or PASSWORD_ENV in environ or ask is None:
        return read_password(Path(password_file) if password_file else None,
                             field="--password-file", environ=environ)
    return ask("keystore password: ")


async def deploy(reactor: Any, out: TextIO, *, chain_url: str, account: Account,
                 chain_id: int | None, confirmations: int, poll: float = 1.0,
                 test_token: bool = False, mint_to: Sequence[Address] = ()) -> Deployment:
    """Deploy the Adjudicator from `account` and wait until it is `confirmations` blocks deep;
    progress lines go to `out`. With `test_token`, then the test token PRN (test networks
    only), minting TEST_TOKEN_SUPPLY to `account` and to each of `mint_to`."""
    backend = ChainBackend(reactor, url=chain_url, chain_id=chain_id)
    backend.startService()
    try:
        connected = await backend.connect()
        if test_token and connected == MAINNET_CHAIN_ID:
            raise InvalidArgument("--test-token deploys a token anyone can mint: not on "
                                  "Ethereum mainnet", name="--test-token", value=True,
                                  requirement="a test network")
        balance = await backend.balance(account.address)
        out.write(f"chain {connected} at {shown_url(chain_url)}; deploying from "
                  f"{hex_address(account.address)} (balance {balance / 10**18:g} ETH)\n")
        out.write("… sending the deployment and waiting for it to be mined\n")
        out.flush()
        receipt = await backend.sender.transact(
            account, "deployAdjudicator", None,
            backend.codec.encode_constructor(backend.artifact.bytecode))
        if receipt.contract_address is None:
            raise InvalidArgument("the deployment's receipt names no contract", name="receipt",
                                  value=receipt.tx_hash.hex(), requirement="a contract")
        address = Address(receipt.contract_address)
        out.write(f"mined in block {receipt.block_number} (gas {receipt.gas_used:,}): "
                  f"{hex_address(address)}\n")
        await _confirmed(reactor, backend, out, receipt.block_number, confirmations, poll)
        # The code there must be this version's Adjudicator (InvalidContracts otherwise).
        await backend.validate_adjudicator(address)
        out.write(f"checked: the code at {hex_address(address)} is this version's "
                  "Adjudicator\n")
        token = None
        if test_token:
            holders = list(dict.fromkeys([account.address, *mint_to]))
            out.write(f"… deploying the test token {TEST_TOKEN_SYMBOL} and minting "
                      f"{TEST_TOKEN_SUPPLY // 10**TEST_TOKEN_DECIMALS:,} {TEST_TOKEN_SYMBOL} to "
                      f"{plural(len(holders), 'account')}\n")
            out.flush()
            token = await deploy_test_token(backend, account, holders, TEST_TOKEN_SUPPLY)
            await _confirmed(reactor, backend, out, await backend.block_number(), confirmations,
                             poll)
            info = await backend.token_info(token)
            if (info.symbol, info.decimals) != (TEST_TOKEN_SYMBOL, TEST_TOKEN_DECIMALS):
                raise InvalidContracts(
                    f"the test token at {hex_address(token)} says it is {info.symbol} with "
                    f"{info.decimals} decimals", name=TEST_TOKEN_SYMBOL,
                    address=hex_address(token), error="not the test token")
            out.write(f"test token {TEST_TOKEN_SYMBOL} at {hex_address(token)}\n")
        return Deployment(connected, address, receipt.tx_hash, receipt.gas_used,
                          receipt.block_number, token)
    finally:
        backend.stopService()


STALLED = 30.0
"""Seconds without a new block after which the wait for confirmations says why it may last."""


async def _confirmed(reactor: Any, backend: ChainBackend, out: TextIO, block: int,
                     confirmations: int, poll: float) -> None:
    """Until `block` is `confirmations` blocks deep, saying so; once, when no block came for
    `STALLED` seconds, that a chain mining only on transactions never gets there."""
    newest, since, hinted = None, reactor.seconds(), False
    while (depth := (latest := await backend.block_number()) - block) < confirmations:
        if latest != newest:
            newest, since = latest, reactor.seconds()
        elif not hinted and reactor.seconds() - since >= STALLED:
            hinted = True
            out.write(f"… no new block for {STALLED:g} s: a chain that mines only when it gets "
                      "a transaction (anvil without --block-time) never confirms; deploy there "
                      "with --confirmations 0\n")
        out.write(f"… waiting for confirmations: {depth} of {confirmations}\n")
        out.flush()
        await deferLater(reactor, poll, lambda: None)


def check_node_config_target(path: Path) -> None:
    """Refuse, before anything is sent to the chain, a --node-config that could not be written
    afterwards: a deployment spends gas, and a retry spends it again."""
    if path.exists() or path.is_symlink():
        raise ResourceExists(f"{path} exists: write the node config to a new file",
                             type="file", id=str(path))
    folder = path.parent
    if not folder.is_dir():
        raise InvalidArgument(f"--node-config {path}: no folder {folder} to write it in",
                              name="--node-config")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidArgument(f"--node-config {path}: the folder {folder} is not writable",
                              name="--node-config")


def write_node_config(path: Path, chain_url: str, deployment: Deployment,
                      confirmations: int) -> None:
    """A new node config for the deployment (refuses to overwrite a file)."""
    check_node_config_target(path)  # again: the folder may have changed while it deployed
    chain: dict[str, object] = {"url": chain_url, "id": deployment.chain_id,
                                "adjudicator": hex_address(deployment.adjudicator),
                                "confirmations": confirmations}
    if deployment.test_token is not None:
        chain["assets"] = {TEST_TOKEN_SYMBOL: {"address": hex_address(deployment.test_token),
                                               "decimals": TEST_TOKEN_DECIMALS}}
    document = {"data_dir": "data", "chain": chain, "sessions": {"config_dirs": []}}
    header = ("# perund node config written by `perund deploy`: every key is described in "
              "etc/perund.yaml.\n# Name the folders your users' session files live in under "
              "sessions.config_dirs.\n")
    # 0600: chain.url may hold a hosted node's API key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(header + yaml.safe_dump(document, sort_keys=False))


def unlock_account(keystore: str, password: str) -> Account:
    """The account of a keystore file."""
    key = unlock_keystore(Path(keystore).expanduser(), password, field="--keystore")
    return Account(key)


def ask_on_terminal() -> Callable[[str], str] | None:
    """getpass when a person is at a terminal, else None (scripts give a file or the env)."""
    return getpass.getpass if sys.stdin.isatty() else None

