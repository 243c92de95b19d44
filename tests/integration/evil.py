"""Two real daemons on anvil whose node config lists a hostile token, EvilToken (contracts/test),
under the symbol EVL: the token's switches (a broken proxy, blocked accounts, fees, ...) are
thrown by the test from anvil's account 0, while the nodes run (the audit of hostile tokens)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak

from perund.chain.account import Account
from perund.chain.anvil import Anvil, free_port, rpc_call
from perund.cli.generate import anvil_dev_key, generate
from tests.integration.pair import CHALLENGE, World
from tests.node.conftest import deploy

ARTIFACT = Path(__file__).resolve().parents[1] / "contracts" / "artifacts" / "EvilToken.json"
SYMBOL = "EVL"
SUPPLY = 10**6 * 10**18
"""What alice's and bob's on-chain accounts get of the token."""


class EvilToken:
    """A deployed EvilToken, driven by raw transactions from anvil's (unlocked) account 0."""

    def __init__(self, anvil: Anvil, decimals: int = 18) -> None:
        artifact = json.loads(ARTIFACT.read_text())
        self._functions = {f["name"]: f for f in artifact["abi"] if f["type"] == "function"}
        self.url = anvil.url
        self.owner = "0x" + anvil.accounts[0].hex()
        self.address: str = self._send(artifact["bytecode"])["contractAddress"]
        self.tx("setDecimals", decimals)
        for index in (1, 2):  # the on-chain accounts `perund generate` gives alice and bob
            self.tx("mint", "0x" + bytes(Account(anvil_dev_key(index)).address).hex(), SUPPLY)

    def _send(self, data: str, to: str | None = None) -> dict[str, Any]:
        tx = {"from": self.owner, "data": data, "gas": hex(5_000_000), **({"to": to} if to else {})}
        tx_hash = rpc_call(self.url, "eth_sendTransaction", [tx])
        deadline = time.monotonic() + 30
        while (receipt := rpc_call(self.url, "eth_getTransactionReceipt", [tx_hash])) is None:
            assert time.monotonic() < deadline, "no receipt"
            time.sleep(0.05)
        assert receipt["status"] == "0x1", receipt
        return dict(receipt)

    def _data(self, name: str, *args: Any) -> str:
        types = [i["type"] for i in self._functions[name]["inputs"]]
        selector = keccak(f"{name}({','.join(types)})".encode())[:4]
        return "0x" + (selector + abi_encode(types, list(args))).hex()

    def tx(self, name: str, *args: Any) -> None:
        """Call a function of the token (a switch, `mint`) in a transaction."""
        self._send(self._data(name, *args), self.address)

    def view(self, name: str, *args: Any) -> Any:
        out = rpc_call(self.url, "eth_call",
                       [{"to": self.address, "data": self._data(name, *args)}, "latest"])
        types = [o["type"] for o in self._functions[name]["outputs"]]
        return abi_decode(types, bytes.fromhex(out[2:]))[0]


async def evil_world(anvil: Anvil, workdir: Path) -> tuple[World, EvilToken]:
    """Alice's and bob's daemons on a fresh Adjudicator, EVL (18 decimals) in their config."""
    adjudicator = await deploy(anvil)
    token = EvilToken(anvil)
    setup = generate(workdir, chain_url=anvil.url, chain_id=anvil.chain_id,
                     adjudicator=adjudicator, api_port=free_port(),
                     comm_ports=(free_port(), free_port()),
                     assets={SYMBOL: (token.address, 18)})
    return World(setup, workdir, anvil), token


def open_channel(w: World, balances: dict[str, tuple[str, str]]) -> str:
    """Alice proposes a channel with these balances (currency → alice's, bob's), bob's user
    accepts; its ID once open."""
    with w.pushes("bob") as pushes:
        opening = w.background(w.call, "alice", "channel_open", peer="bob",
                               balances={c: {"self": a, "peer": b}
                                         for c, (a, b) in balances.items()},
                               challengeDuration=CHALLENGE)
        proposal = pushes.wait(lambda p: "proposalId" in p)
        w.call("bob", "channel_respondProposal", proposalId=proposal["proposalId"],
               accept=True)
        channel = opening.result(120)
    assert channel["phase"] == "open", channel
    return str(channel["channelId"])


def send(w: World, payer: str, channel_id: str, currency: str, amount: str) -> None:
    """`payer` pays the other one `amount` of `currency` in the channel."""
    payee = "bob" if payer == "alice" else "alice"
    w.call(payer, "channel_send", channelId=channel_id,
           payments=[{"currency": currency, "payee": payee, "amount": amount}])
