"""The node's embedded dev chain: an anvil process the node starts, whose state survives restarts.

With no `chain.url` the node runs its own chain, so one command gives a working node. It is
anvil (from the project's npm packages) with its state in `data_dir/devchain/`: loaded at start,
dumped every `state_interval` seconds and when anvil stops, so a restart, even after a crash,
finds the deposits, the contract and the blocks the node's stores refer to (the start-up checks
of perund/node_checks.py compare them).

- On a fresh state the dev accounts of `perund.chain.devchain.dev_private_key` (the ones
  `perund generate` hands out) are funded, and dev account 0 deploys the Adjudicator and then
  the test token PRN (an ERC20 with EIP-2612 permits, 18 decimals), of which every dev account
  gets 1,000,000; both addresses are kept in `devchain.json` beside the state.
- anvil dies with the node: it gets SIGTERM when the node's process ends, however it ends
  (Linux's parent-death signal, so a `kill -9` of the node too), and dumps its state on the
  way out. It runs in its own session, so a ^C in the node's terminal reaches the node alone,
  which stops its sessions before the chain. Only if anvil itself is killed, or the machine
  fails, are the transactions since the last periodic dump lost: the start-up checks then
  name the channels whose deposits went with them.
- Each start picks a free port: a dying anvil never blocks the next start.
- A torn state file (a crash in the middle of a dump) is set aside and the previous start's
  copy is used; the node's checks then say what that copy lacks.
- `reset()` (the `--fresh-chain` option of `twistd perund`) moves the state aside and starts a
  new chain: every channel on the old one is gone with it.

Blocking work (starting the process, reading the state file) runs in the reactor's thread pool;
the process is spawned from the reactor thread, whose life the parent-death signal follows.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_hash.auto import keccak
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from perund.chain.abi import ContractCodec
from perund.chain.account import Account
from perund.chain.anvil import find_anvil, free_port, rpc_call
from perund.chain.artifact import load_artifact
from perund.chain.devchain import (
    DEFAULT_DEV_CHAIN_ID,
    DEV_ACCOUNT_COUNT,
    DEV_BALANCE,
    dev_private_keys,
)
from perund.channel.types import Address, hex_address, to_address
from perund.errors import ChainNotReachable, InvalidContracts

if TYPE_CHECKING:
    from perund.chain.backend import ChainBackend

log = Logger(namespace="perund.chain.embedded")

STATE_FILE = "state.json"
PREVIOUS_STATE_FILE = "state.previous.json"
METADATA_FILE = "devchain.json"
TEST_TOKEN_ARTIFACT = "TestToken"
TEST_TOKEN_NAME = "Perund test token"
TEST_TOKEN_SYMBOL = "PRN"
TEST_TOKEN_DECIMALS = 18
TEST_TOKEN_NONCE = 1
"""Dev account 0's nonce when a new chain deploys PRN (its first transaction deployed the
Adjudicator), which fixes PRN's address: `perund generate` writes it into the config."""
DEV_TOKEN_SUPPLY = 1_000_000 * 10**TEST_TOKEN_DECIMALS
"""What each dev account holds of the test token PRN on a new chain: 1,000,000 PRN."""
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1


def created_address(sender: Address, nonce: int) -> Address:
    """The address of the contract that `sender` creates with its transaction `nonce`:
    keccak256(rlp([sender, nonce]))[12:]."""
    if not 0 <= nonce < 2**64:
        raise ValueError("a nonce is a uint64")
    number = nonce.to_bytes((nonce.bit_length() + 7) // 8, "big")
    encoded_nonce = number if len(number) == 1 and number[0] < 0x80 \
        else bytes([0x80 + len(number)]) + number
    payload = bytes([0x80 + 20]) + bytes(sender) + encoded_nonce
    return Address(keccak(bytes([0xC0 + len(payload)]) + payload)[12:])


def dev_token_address() -> Address:
    """Where a new embedded chain deploys its test token PRN (dev account 0, nonce 1)."""
    return created_address(Account(dev_private_keys(1)[0]).address, TEST_TOKEN_NONCE)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent thread ends (Linux)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedChain:
    """One anvil process with persistent state in `folder`. `start`, then `prepare` the chain
    through a connected backend, and `stop` at the end."""

    def __init__(self, reactor: Any, folder: Path, *, chain_id: int = DEFAULT_DEV_CHAIN_ID,
                 accounts: int = DEV_ACCOUNT_COUNT, state_interval: float = 2.0) -> None:
        self._reactor = reactor
        self.folder = folder
        self.chain_id = chain_id
        self.private_keys = dev_private_keys(accounts)
        self.state_interval = state_interval
        self.url = ""
        self.fresh = False
        """Whether this start began a new chain (no state to load)."""
        self.set_aside: Path | None = None
        """Where `reset` put the saved chain at this start, if it did."""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def state_file(self) -> Path:
        """Where anvil loads and dumps its state."""
        return self.folder / STATE_FILE

    @property
    def running(self) -> bool:
        """Whether anvil runs."""
        return self._process is not None and self._process.poll() is None

    def dev_account(self, index: int) -> Account:
        """Dev account `index` as a transaction signer."""
        return Account(self.private_keys[index])

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> str:
        """Start anvil on the saved state (or a new one); its URL once it answers."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fresh = not await deferToThread(self._usable_state)
        binary = find_anvil()
        last: ChainNotReachable | None = None
        for _ in range(3):  # another process may take the free port before anvil binds it
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            self._spawn(binary, port)
            try:
                await self._wait_ready()
            except ChainNotReachable as exc:
                last = exc
                await self.stop()
                continue
            log.info("embedded dev chain {chain_id} at {url}, state in {state} ({how})",
                     chain_id=self.chain_id, url=self.url, state=str(self.state_file),
                     how="new" if self.fresh else "loaded")
            return self.url
        assert last is not None
        raise last

    def _usable_state(self) -> bool:
        """Whether a state file can be loaded; a torn one is set aside for the previous copy."""
        state, previous = self.state_file, self.folder / PREVIOUS_STATE_FILE
        if state.exists():
            try:
                with state.open("rb") as file:
                    json.load(file)
            except (OSError, ValueError):
                torn = self.folder / f"state.torn-{int(time.time())}.json"
                state.replace(torn)
                log.error("the embedded chain's state file was torn (a crash while it was "
                          "written): kept as {torn}; starting from the previous copy",
                          torn=str(torn))
            else:
                shutil.copyfile(state, previous)  # the copy a torn dump falls back to
                return True
        if previous.exists():
            shutil.copyfile(previous, state)
            return True
        return False

    def _spawn(self, binary: str, port: int) -> None:
        args = [binary, "--host", "127.0.0.1", "--port", str(port),
                "--chain-id", str(self.chain_id), "--accounts", "1",
                "--state", str(self.state_file),
                "--state-interval", str(max(1, round(self.state_interval))), "--silent"]
        with (self.folder / "anvil.log").open("ab") as out:
            try:
                # Its own session: a ^C in the node's terminal reaches the node, which stops
                # its sessions and then the chain, not the chain first.
                self._process = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out,
                    preexec_fn=_die_with_parent, close_fds=True, start_new_session=True)
            except OSError as exc:
                raise ChainNotReachable(f"cannot run anvil ({binary}): {exc}; run `make deps`",
                                        chainUrl="embedded") from exc

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                tail = (self.folder / "anvil.log").read_text(errors="replace")[-500:]
                raise ChainNotReachable(
                    f"the embedded chain (anvil) exited during start-up: {tail.strip()}",
                    chainUrl="embedded")
            try:
                answer = await deferToThread(rpc_call, self.url, "eth_chainId", (), 1.0)
            except ChainNotReachable:
                if time.monotonic() > deadline:
                    raise ChainNotReachable(
                        f"the embedded chain did not answer within {STARTUP_TIMEOUT:g} s",
                        chainUrl="embedded") from None
                await deferLater(self._reactor, 0.05, lambda: None)
                continue
            if int(answer, 16) != self.chain_id:
                raise ChainNotReachable(f"anvil reports chain {int(answer, 16)}, not "
                                        f"{self.chain_id}", chainUrl="embedded")
            return

    def exit_status(self) -> int | None:
        """anvil's exit status if it ended on its own (reaping it), else None (running, or
        stopped by `stop`)."""
        process = self._process
        return None if process is None else process.poll()

    async def stop(self) -> None:
        """Stop anvil: SIGTERM (it dumps its state), then SIGKILL if it lingers."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            await deferLater(self._reactor, 0.05, lambda: None)
        if process.poll() is None:
            log.warn("the embedded chain did not stop within {timeout} s: killed",
                     timeout=STOP_TIMEOUT)
            process.kill()
            await deferToThread(process.wait)

    def reset(self) -> Path | None:
        """Set the saved chain aside (before `start`): the next start begins a new chain. Where
        it went, or None when there was none."""
        if not self.folder.exists():
            return None
        stamp = f"{self.folder.name}.replaced-{int(time.time())}"
        aside = self.folder.with_name(stamp)
        again = 1
        while aside.exists():  # set aside twice within a second (two --fresh-chain starts)
            again += 1
            aside = self.folder.with_name(f"{stamp}-{again}")
        self.folder.rename(aside)
        log.warn("the embedded chain's state was set aside in {aside}: a new chain starts",
                 aside=str(aside))
        self.set_aside = aside
        return aside

    # -- the chain's contents -------------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        try:
            document = json.loads((self.folder / METADATA_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return document if isinstance(document, dict) else {}

    def _write_metadata(self, document: dict[str, Any]) -> None:
        path = self.folder / METADATA_FILE
        path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        os.chmod(path, 0o600)

    def recorded_adjudicator(self) -> Address | None:
        """The Adjudicator this chain's first start deployed, as recorded beside the state."""
        try:
            return to_address(self._metadata()["adjudicator"])
        except (ValueError, KeyError, TypeError):
            return None

    def recorded_test_token(self) -> Address | None:
        """The test token PRN deployed on this chain, as recorded beside the state."""
        try:
            return to_address(self._metadata()["testToken"]["address"])
        except (ValueError, KeyError, TypeError):
            return None

    def record(self, adjudicator: Address) -> None:
        """Remember the Adjudicator a new chain deployed (a new record: nothing of an older
        chain's stays)."""
        self._write_metadata(
            {"chainId": self.chain_id, "adjudicator": hex_address(adjudicator)}
        )

    def recorded_test_token_info(self) -> tuple[str, Address, int] | None:
        """The test token's symbol, address and decimals, as recorded beside the state."""
        try:
            token = self._metadata()["testToken"]
            symbol, decimals = token["symbol"], token["decimals"]
            address = to_address(token["address"])
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(symbol, str) or type(decimals) is not int:
            return None
        return symbol, address, decimals

    async def add_test_token(self, chain: ChainBackend) -> Address:
        """Deploy the test token PRN (contracts/test/TestToken.sol, 18 decimals) from dev
        account 0, give every dev account `DEV_TOKEN_SUPPLY`, and record it beside the state;
        its address. A chain recorded before the token existed gets it at its next start."""
        token = await deploy_test_token(
            chain, self.dev_account(0), [Account(key).address for key in self.private_keys],
            DEV_TOKEN_SUPPLY)
        document = self._metadata()
        document["testToken"] = {"symbol": TEST_TOKEN_SYMBOL, "address": hex_address(token),
                                 "decimals": TEST_TOKEN_DECIMALS}
        self._write_metadata(document)
        log.info("deployed the test token {symbol} at {address}; each dev account holds "
                 "{supply} {symbol}", symbol=TEST_TOKEN_SYMBOL, address=hex_address(token),
                 supply=DEV_TOKEN_SUPPLY // 10**TEST_TOKEN_DECIMALS)
        return token

    def fund_dev_accounts_blocking(self) -> None:
        """Give every dev account its genesis balance (a fresh chain only; blocking)."""
        for key in self.private_keys:
            address = hex_address(Account(key).address)
            rpc_call(self.url, "anvil_setBalance", (address, hex(DEV_BALANCE)), 5.0)


async def deploy_test_token(chain: ChainBackend, deployer: Account, holders: Sequence[Address],
                            supply: int) -> Address:
    """Deploy the test token PRN (contracts/test/TestToken.sol: a plain ERC20 with EIP-2612
    permits, 18 decimals, whose `mint` is open to anyone) from `deployer` and mint `supply` to
    each of `holders`; its address. For dev and test chains only."""
    artifact = load_artifact(TEST_TOKEN_ARTIFACT)
    codec = ContractCodec(artifact.abi)
    created = codec.encode_constructor(artifact.bytecode, TEST_TOKEN_NAME, TEST_TOKEN_SYMBOL)
    receipt = await chain.sender.transact(deployer, "deployTestToken", None, created)
    if receipt.contract_address is None:
        raise InvalidContracts("the test token's deployment names no contract address",
                               name=TEST_TOKEN_ARTIFACT, address=None,
                               error="no contract address")
    token = Address(receipt.contract_address)
    for holder in holders:
        mint = codec.encode_call("mint", holder, supply)
        await chain.sender.transact(deployer, "mint", token, mint)
    return token
