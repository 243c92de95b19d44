"""Three real daemons for the virtual-channel tests: alice, ingrid (the intermediary) and carol,
one `twistd perund` each on anvil, optionally with every peer connection through a `Relay`
(tests/integration/relay.py) that can fail a party at an exact protocol step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
import yaml

from perund.chain.anvil import Anvil, free_port, rpc_call
from perund.cli.generate import Generated, generate
from tests.integration.daemons import Daemon, Users
from tests.integration.onchain import ChainView, Ledger
from tests.integration.relay import Relay
from tests.node.conftest import deploy

CHALLENGE = 60
"""Every channel's challenge duration (the nodes' minimum is 3 * (poll + tx timeout))."""
USERS = ("alice", "ingrid", "carol")
TIMEOUTS = {"response": "8s", "tx": "10s", "funding": "8s", "peer_dial": "2s",
            "peer_request": "5s"}


def split(setup: Generated, timeouts: dict[str, str],
          intermediary: dict[str, Any]) -> dict[str, Path]:
    """One node config per user (each its own API port and data folder); ingrid's session
    serves as intermediary with the settings `intermediary`."""
    node = yaml.safe_load(setup.node_config.read_text())
    node["chain"]["poll_interval"] = "200ms"
    node["timeouts"] = timeouts
    configs = {}
    for name in USERS:
        own = dict(node, data_dir=f"data-{name}",
                   api={"listen": f"tcp:{free_port()}:interface=127.0.0.1"})
        path = setup.node_config.with_name(f"{name}.yaml")
        path.write_text(yaml.safe_dump(own))
        configs[name] = path
    ingrid = next(u for u in setup.users if u.name == "ingrid").session_file
    session = yaml.safe_load(ingrid.read_text())
    session["intermediary"] = intermediary
    ingrid.write_text(yaml.safe_dump(session))
    return configs


def through(relay: Relay, setup: Generated) -> None:
    """Point every user's contacts at the relay: a relay port per (user, peer)."""
    ports = {u.name: u.comm_port for u in setup.users}
    for user in setup.users:
        contacts_file = user.session_file.with_name("contacts.yaml")
        contacts = yaml.safe_load(contacts_file.read_text())
        for peer, entry in contacts.items():
            entry["comm_address"] = f"127.0.0.1:{relay.route(user.name, peer, ports[peer])}"
        contacts_file.write_text(yaml.safe_dump(contacts))


class Hub(Users):
    """The three daemons with open sessions, the chain, and the helpers the tests share."""

    def __init__(self, setup: Generated, workdir: Path, anvil: Anvil, *,
                 timeouts: dict[str, str] = TIMEOUTS, lock_window: str = "5s",
                 intermediary: dict[str, Any] | None = None, relayed: bool = False) -> None:
        """`intermediary`: ingrid's intermediary settings, by default enabled with
        `lock_window`."""
        self.anvil = anvil
        self.users = {u.name: u for u in setup.users}
        configs = split(setup, timeouts,
                        intermediary or {"enabled": True, "lock_window": lock_window})
        self.relay: Relay | None = None
        if relayed:
            self.relay = Relay(kill=lambda name: self.daemons[name].kill())
            through(self.relay, setup)
        daemons: dict[str, Daemon] = {}
        try:
            for name in USERS:
                daemons[name] = Daemon(configs[name], workdir)
            super().__init__(daemons, {name: self.users[name].session_file for name in USERS})
        except BaseException:
            for daemon in daemons.values():
                daemon.stop()
            raise
        node = yaml.safe_load(configs["alice"].read_text())
        self.view = ChainView(anvil, node["chain"]["adjudicator"])
        self.travel = self.view.travel
        self.ledger = Ledger(self.view, {n: self.users[n].on_chain_address for n in USERS})

    def address(self, name: str) -> str:
        return self.users[name].on_chain_address

    def open(self, proposer: str, responder: str, ours: str, theirs: str,
             via: str | None = None, max_fee: str | None = None) -> dict[str, Any]:
        """`proposer` opens a channel with `responder` (a virtual one `via` an intermediary,
        paying it at most `max_fee` ETH), whose user accepts the pushed proposal; both sides'
        channel info once open."""
        extra: dict[str, Any] = {} if via is None else {"via": via}
        if max_fee is not None:
            extra["maxFee"] = {"ETH": max_fee}
        with self.pushes(responder) as pushes:
            opening = self.background(self.call, proposer, "channel_open", peer=responder,
                                      balances={"ETH": {"self": ours, "peer": theirs}},
                                      challengeDuration=CHALLENGE, **extra)
            proposal = pushes.wait(lambda p: "proposalId" in p)
            assert proposal["kind"] == ("ledger" if via is None else "virtual")
            assert proposal.get("via") == via
            accepted = self.call(responder, "channel_respondProposal",
                                 proposalId=proposal["proposalId"], accept=True)
            channel: dict[str, Any] = opening.result(120)
        assert channel["phase"] == "open" and accepted["phase"] == "open"
        assert channel["channelId"] == accepted["channelId"]
        return channel

    def ledgers(self) -> tuple[str, str]:
        """alice-ingrid and carol-ingrid, 5 ETH from each side."""
        la = self.open("alice", "ingrid", "5", "5")["channelId"]
        lc = self.open("carol", "ingrid", "5", "5")["channelId"]
        return la, lc

    def nonces(self) -> dict[str, int]:
        return {name: int(rpc_call(self.anvil.url, "eth_getTransactionCount",
                                   [self.address(name), "latest"]), 16)
                for name in USERS}

    async def check_payouts(self, channel_id: str, **expected: int) -> None:
        await self.view.check_payouts(
            channel_id, {self.address(name): amount for name, amount in expected.items()})

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
        self.view.close()
        self.stop()


@pytest_twisted.async_fixture
async def hub_setup(anvil: Anvil, tmp_path: Path) -> Generated:
    return generate(tmp_path, chain_url=anvil.url, chain_id=anvil.chain_id,
                    adjudicator=await deploy(anvil), api_port=free_port(),
                    comm_ports=[free_port() for _ in USERS], users=USERS)
