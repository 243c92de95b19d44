"""`perund deploy` onto a fresh anvil: the Adjudicator deployed from a keystore account, the
confirmations waited for, the code checked, a node config written that a node starts with."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import cast

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from perund.chain.account import Account
from perund.chain.anvil import Anvil, free_port
from perund.chain.artifact import load_artifact
from perund.chain.backend import ChainBackend
from perund.channel.types import hex_address, to_address
from perund.cli.deploy import _confirmed
from perund.cli.generate import anvil_dev_key, generate
from perund.config import load_node_config
from perund.keystore.v3 import write_keystore
from tests.integration.daemons import running

PERUND = str(Path(sys.executable).with_name("perund"))


@pytest.mark.anvil
@pytest_twisted.ensureDeferred
async def test_deploy_onto_a_fresh_chain_and_start_a_node_on_it(tmp_path: Path) -> None:
    with Anvil(extra_args=("--block-time", "1")) as chain:
        keystore = tmp_path / "deployer.json"
        write_keystore(keystore, chain.private_keys[0], "s3cret", light=True)
        (tmp_path / "password").write_text("s3cret\n")
        config = tmp_path / "perund.yaml"
        run = subprocess.run(
            [PERUND, "deploy", "--chain-url", chain.url, "--keystore", str(keystore),
             "--password-file", str(tmp_path / "password"), "--chain-id", str(chain.chain_id),
             "--confirmations", "2", "--node-config", str(config)],
            capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert "waiting for confirmations" in run.stdout and "is this version's Adjudicator" \
            in run.stdout
        found = re.search(r"^adjudicator  (0x[0-9a-fA-F]{40})$", run.stdout, re.M)
        assert found, run.stdout
        address = to_address(found.group(1))

        backend = ChainBackend(reactor, url=chain.url, chain_id=chain.chain_id)
        backend.startService()
        try:
            await backend.connect()
            code = await backend.run_blocking(backend.client.code_blocking, address)
            assert load_artifact().runtime_code_matches(code)
        finally:
            backend.stopService()

        node = load_node_config(config)
        assert node.chain.adjudicator == address and node.chain.url == chain.url
        assert node.chain.id == chain.chain_id and node.chain.confirmations == 2
        assert yaml.safe_load(config.read_text())["sessions"] == {"config_dirs": []}

        # Never over an existing file; a wrong chain ID is refused before anything is sent.
        again = subprocess.run(
            [PERUND, "deploy", "--chain-url", chain.url, "--keystore", str(keystore),
             "--password-file", str(tmp_path / "password"), "--chain-id", "1",
             "--node-config", str(tmp_path / "other.yaml")],
            capture_output=True, text=True, timeout=120)
        assert again.returncode == 1 and "chain.id" in again.stderr
        assert not (tmp_path / "other.yaml").exists()


@pytest.mark.anvil
@pytest.mark.slow
def test_two_nodes_use_a_deployment_with_the_test_token(tmp_path: Path) -> None:
    """`perund deploy --test-token` onto a fresh anvil; two nodes (alice's and bob's) started
    from the node config it wrote; a channel in ETH and PRN opened, paid and closed."""
    with Anvil(extra_args=("--block-time", "1")) as chain:
        keystore = tmp_path / "deployer.json"
        write_keystore(keystore, chain.private_keys[0], "s3cret", light=True)
        (tmp_path / "password").write_text("s3cret\n")
        deployed = tmp_path / "deployed.yaml"
        users = [hex_address(Account(anvil_dev_key(i)).address) for i in (1, 2)]
        run = subprocess.run(
            [PERUND, "deploy", "--chain-url", chain.url, "--keystore", str(keystore),
             "--password-file", str(tmp_path / "password"), "--confirmations", "1",
             "--node-config", str(deployed), "--test-token",
             *(option for user in users for option in ("--mint-to", user))],
            capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stderr
        found = re.search(r"^test token   (0x[0-9a-fA-F]{40}) \(PRN, 18 decimals\)$", run.stdout,
                          re.M)
        assert found, run.stdout
        node = load_node_config(deployed)
        assert node.chain.assets["PRN"].address == to_address(found.group(1))
        assert node.chain.assets["PRN"].decimals == 18

        # The users' folders (session files, keystores of anvil's accounts 1 and 2), and one
        # node config each, made from the one the deployment wrote.
        sessions = generate(tmp_path / "users", chain_url=chain.url,
                            adjudicator=hex_address(node.chain.adjudicator or b""),
                            comm_ports=(free_port(), free_port()))
        configs = []
        for name in ("alice", "bob"):
            document = yaml.safe_load(deployed.read_text())
            document["data_dir"] = f"data-{name}"
            document["api"] = {"listen": f"tcp:{free_port()}:interface=127.0.0.1"}
            document["chain"].update({"poll_interval": "200ms", "block_time": "1s"})
            document["sessions"] = {"config_dirs": [str(tmp_path / "users" / name)]}
            path = tmp_path / f"{name}.yaml"
            path.write_text(yaml.safe_dump(document))
            configs.append(path)
        files = {u.name: str(u.session_file) for u in sessions.users}
        with running(*configs, workdir=tmp_path) as (alice, bob):
            assert list(alice.call("node_getConfig")["assets"]) == ["ETH", "PRN"]
            a = alice.call("session_open", configFile=files["alice"])["sessionId"]
            b = bob.call("session_open", configFile=files["bob"])["sessionId"]
            before = alice.call("session_balance", sessionId=a)["balances"]
            assert before["PRN"] == "1000000"
            pushes = bob.socket()
            try:
                pushes.call("subscribe", sessionId=b, topic="proposals")
                pushes.call("subscribe", sessionId=b, topic="updates")
                with ThreadPoolExecutor(1) as pool:
                    opening = pool.submit(alice.call, "channel_open", sessionId=a, peer="bob",
                                          balances={"ETH": {"self": "1", "peer": "0"},
                                                    "PRN": {"self": "25", "peer": "5"}})
                    proposal = pushes.wait(lambda p: "proposalId" in p)
                    bob.call("channel_respondProposal", sessionId=b,
                             proposalId=proposal["proposalId"], accept=True)
                    cid = opening.result(120)["channelId"]
                    paid = alice.call("channel_send", sessionId=a, channelId=cid, payments=[
                        {"currency": "PRN", "payee": "bob", "amount": "12.5"}])
                    assert paid["balances"]["PRN"] == {"self": "12.5", "peer": "17.5"}
                    closing = pool.submit(alice.call, "channel_close", sessionId=a,
                                          channelId=cid)
                    final = pushes.wait(lambda p: p.get("type") == "final")
                    bob.call("channel_respondUpdate", sessionId=b, channelId=cid,
                             updateId=final["updateId"], accept=True)
                    assert closing.result(120)["paidOut"] == {"ETH": "1", "PRN": "12.5"}
            finally:
                pushes.close()
            after = alice.call("session_balance", sessionId=a)["balances"]
            assert Decimal(after["PRN"]) == Decimal(before["PRN"]) - Decimal("12.5")
            bobs = bob.call("session_balance", sessionId=b)["balances"]
            assert Decimal(bobs["PRN"]) == Decimal("1000012.5")


@pytest.mark.anvil
def test_the_test_token_is_refused_where_it_does_not_belong(tmp_path: Path) -> None:
    keystore = tmp_path / "deployer.json"
    (tmp_path / "password").write_text("s3cret\n")
    base = [PERUND, "deploy", "--keystore", str(keystore), "--password-file",
            str(tmp_path / "password")]
    # --mint-to means nothing without the token; a bad address is named. Nothing is sent.
    run = subprocess.run([*base, "--chain-url", "http://127.0.0.1:1", "--mint-to",
                          "0x" + "ab" * 20], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "--mint-to needs --test-token" in run.stderr
    run = subprocess.run([*base, "--chain-url", "http://127.0.0.1:1", "--test-token",
                          "--mint-to", "bob"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "--mint-to bob: not a 0x address" in run.stderr
    # A chain that says it is Ethereum mainnet gets no token anyone can mint.
    with Anvil(1) as chain:
        write_keystore(keystore, chain.private_keys[0], "s3cret", light=True)
        run = subprocess.run([*base, "--chain-url", chain.url, "--test-token",
                              "--node-config", str(tmp_path / "n.yaml")],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 1 and "not on Ethereum mainnet" in run.stderr, run.stderr
        assert "deploying" not in run.stdout and not (tmp_path / "n.yaml").exists()


def test_a_node_config_that_could_not_be_written_is_refused_before_anything_is_sent(
        tmp_path: Path) -> None:
    """A deployment spends gas: --node-config is checked first (the chain URL here is
    unreachable, so any attempt to deploy would fail differently)."""
    (tmp_path / "password").write_text("s3cret\n")
    base = [PERUND, "deploy", "--keystore", str(tmp_path / "deployer.json"),
            "--password-file", str(tmp_path / "password"), "--chain-url", "http://127.0.0.1:1"]
    (tmp_path / "taken.yaml").write_text("data_dir: data\n")
    for target, said in ((tmp_path / "nowhere" / "n.yaml", "no folder"),
                         (tmp_path / "taken.yaml", "exists: write the node config to a new file")):
        run = subprocess.run([*base, "--node-config", str(target)], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 1 and said in run.stderr, run.stderr
        assert "Traceback" not in run.stderr and run.stdout == ""


class _NoNewBlocks:
    """A chain that mines only on transactions, and gets none: its newest block stays."""

    async def block_number(self) -> int:
        return 7


def test_a_wait_for_confirmations_that_gets_no_block_says_why_once() -> None:
    clock = Clock()
    out = io.StringIO()
    waiting = Deferred.fromCoroutine(
        _confirmed(clock, cast(ChainBackend, _NoNewBlocks()), out, 7, 2, 1.0))
    clock.pump([1.0] * 29)
    assert "no new block" not in out.getvalue()
    clock.pump([1.0] * 40)
    said = out.getvalue().splitlines()
    assert said.count("… no new block for 30 s: a chain that mines only when it gets a "
                      "transaction (anvil without --block-time) never confirms; deploy there "
                      "with --confirmations 0") == 1
    assert said[-1] == "… waiting for confirmations: 0 of 2" and not waiting.called
    waiting.cancel()
    waiting.addErrback(lambda _: None)
