"""`perund deploy` onto a fresh anvil: the Adjudicator deployed from a keystore account, the
confirmations waited for, the code checked, a node config written that a node starts with."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor

from perund.chain.anvil import Anvil
from perund.chain.artifact import load_artifact
from perund.chain.backend import ChainBackend
from perund.channel.types import to_address
from perund.config import load_node_config
from perund.keystore.v3 import write_keystore

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
