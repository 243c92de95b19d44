"""Two real daemons for the dispute tests: alice and bob, one `twistd perund` each on anvil,
and the classic cheat those tests share (bob registers an old state; alice's node refutes it)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from perund.chain.anvil import Anvil
from perund.channel.records import Channel
from perund.cli.generate import Generated
from tests.integration.daemons import Daemon, Users
from tests.integration.onchain import ChainView, until
from tests.node.conftest import two_nodes

CHALLENGE = 60
"""The channels' challenge duration in seconds (the nodes' minimum is 3 * (poll + tx timeout))."""

DEV_INDEX = {"alice": 1, "bob": 2}
"""The anvil dev account of each user's on-chain account (a cheater signs with its key)."""


class World(Users):
    """Alice's and bob's daemons with open sessions, the chain, and the helpers the tests share."""

    def __init__(self, setup: Generated, workdir: Path, anvil: Anvil,
                 confirmations: int = 0) -> None:
        self.anvil = anvil
        self.setup = setup
        alice_config, bob_config = two_nodes(setup)
        for config in (alice_config, bob_config):
            node = yaml.safe_load(config.read_text())
            node["chain"]["poll_interval"] = "200ms"
            if confirmations:
                # Blocks come every second (the test mines them): a challenge of CHALLENGE
                # seconds stays above the nodes' minimum.
                node["chain"].update(confirmations=confirmations, block_time="1s")
            node["timeouts"] = {"response": "8s", "tx": "10s", "funding": "8s",
                                "peer_dial": "2s", "peer_request": "5s"}
            config.write_text(yaml.safe_dump(node))
        self.users = {u.name: u for u in setup.users}
        self.alice = Daemon(alice_config, workdir)
        try:
            self.bob = Daemon(bob_config, workdir)
        except BaseException:
            self.alice.stop()
            raise
        super().__init__({"alice": self.alice, "bob": self.bob},
                         {name: self.users[name].session_file for name in ("alice", "bob")})
        node = yaml.safe_load(alice_config.read_text())
        self.view = ChainView(anvil, node["chain"]["adjudicator"])
        self.chain = self.view.chain
        self.travel = self.view.travel
        self.connected = self.view.connected

    def open_channel(self, alice: str, bob: str) -> str:
        """Alice proposes a channel with these deposits, bob's user accepts; its ID."""
        with self.pushes("bob") as pushes:
            opening = self.background(self.call, "alice", "channel_open", peer="bob",
                                      balances={"ETH": {"self": alice, "peer": bob}},
                                      challengeDuration=CHALLENGE)
            proposal = pushes.wait(lambda p: "proposalId" in p)
            self.call("bob", "channel_respondProposal", proposalId=proposal["proposalId"],
                      accept=True)
            channel = opening.result(120)
        assert channel["phase"] == "open"
        return str(channel["channelId"])

    def pay(self, payer: str, channel_id: str, amount: str) -> dict[str, Any]:
        payee = "bob" if payer == "alice" else "alice"
        info: dict[str, Any] = self.call(payer, "channel_send", channelId=channel_id, payments=[
            {"currency": "ETH", "payee": payee, "amount": amount}])
        return info

    def backup(self, name: str, workdir: Path) -> Path:
        """A copy of the user's store as it is now (the cheater's old backup)."""
        copy = workdir / f"{name}-backup"
        shutil.copytree(self.users[name].session_file.parent / "db", copy)
        return copy

    def receiver(self, name: str) -> str:
        return self.users[name].on_chain_address.lower()

    async def check_payouts(self, channel_id: str, alice: int, bob: int) -> None:
        await self.view.check_payouts(channel_id, {self.receiver("alice"): alice,
                                                   self.receiver("bob"): bob})

    def close(self) -> None:
        self.view.close()
        self.stop()


async def register_as(w: World, name: str, channel: Channel) -> None:
    """The cheater registers `channel`'s current state on the contract with its own keys."""
    await w.view.register_old(DEV_INDEX[name], channel)


async def stale_state_refuted(w: World, channel_id: str, old: Channel,
                              latest_version: int) -> dict[str, Any]:
    """Bob (gone) registers his `old` state; alice's node refutes it with the latest, and
    concludes after the challenge period: alice's `closed` push."""
    assert old.current is not None and old.current.state.version < latest_version
    with w.pushes("alice") as pushes:
        await register_as(w, "bob", old)
        # Alice's watcher sees the old state and registers hers within the challenge period.
        disputed = pushes.wait(lambda p: p.get("type") == "disputed")
        assert disputed["channelId"] == channel_id
        until(lambda: w.on_chain_version("alice", channel_id) == latest_version,
              "the refutation")
        w.travel(CHALLENGE + 1)
        until(lambda: w.phase("alice", channel_id) == "closed", "alice's node concluding")
        done: dict[str, Any] = pushes.wait(
            lambda p: p.get("type") == "closed" and p["channelId"] == channel_id)
        return done
