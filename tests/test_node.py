"""The twistd plugin's options and the NodeService's ordered start and stop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.plugin import getPlugins

from perund.config import parse_node_config
from perund.errors import ChainNotReachable
from perund.node import NodeService
from perund.tap import Options


def test_plugin_is_discoverable() -> None:
    from twisted.application.service import IServiceMaker

    names = [maker.tapname for maker in getPlugins(IServiceMaker)]
    assert "perund" in names


def test_twistd_lists_the_plugin_from_any_folder(tmp_path: Path) -> None:
    """What an operator runs: the venv's twistd, elsewhere than the checkout (the install must
    expose twisted/plugins/perund_plugin.py, which a bare editable install does not)."""
    twistd = Path(sys.executable).with_name("twistd")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    listed = subprocess.run([str(twistd), "--help"], cwd=tmp_path, env=env, text=True,
                            capture_output=True, timeout=60).stdout
    assert re.search(r"^\s+perund\s+A state-channel node", listed, re.M), listed


def test_options_validate_before_the_reactor(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "perund.yaml"
    config.write_text("chain:\n  url: ftp://nowhere\n  colour: red\ntimeouts:\n  tx: soon\n")
    options = Options()
    with pytest.raises(SystemExit) as caught:
        options.parseOptions(["--config", str(config)])
    assert caught.value.code == 1
    message = capsys.readouterr().err
    assert "chain.url" in message and "chain.colour" in message and "timeouts.tx" in message


def test_overrides_are_validated_and_applied(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "perund.yaml"
    config.write_text("chain:\n  block_time: 2s\nsessions:\n  config_dirs: [users]\n")
    options = Options()
    options.parseOptions(["--config", str(config), "--api-listen", "tcp:0", "--data-dir",
                          str(tmp_path)])
    node = options["node_config"]
    assert node.api.listen == "tcp:0"
    assert node.data_dir == tmp_path.resolve()
    # What the file says and no override touches is kept.
    assert node.chain.block_time == 2.0 and node.sessions.config_dirs == (tmp_path / "users",)
    with pytest.raises(SystemExit):
        Options().parseOptions(["--config", str(config), "--chain-url", "not a url"])
    assert "chain.url" in capsys.readouterr().err


@pytest_twisted.ensureDeferred
async def test_node_starts_on_the_embedded_chain_and_stops(tmp_path: Path) -> None:
    config = tmp_path / "perund.yaml"
    config.write_text("data_dir: data\n")
    options = Options()
    options.parseOptions(["--config", str(config), "--api-listen", "tcp:0:interface=127.0.0.1"])
    node = NodeService(reactor, options["node_config"])
    node.startService()
    await node.ready
    assert node.chain.chain_id == 1337
    assert node.chain.adjudicator is not None
    await node.stopService()
    assert not node.chain.pool.started


@pytest_twisted.ensureDeferred
async def test_unreachable_chain_fails_start_up_clearly(tmp_path: Path) -> None:
    config = parse_node_config({
        "data_dir": str(tmp_path),
        "chain": {"url": "http://127.0.0.1:9", "adjudicator": "0x" + "01" * 20},
        "timeouts": {"chain_connect": "2s"},
    })
    node = NodeService(NotRunningReactor(), config)
    node.startService()
    with pytest.raises(ChainNotReachable):
        await node.ready
    await node.stopService()


class NotRunningReactor:
    """The global reactor, but reporting not running so a failed start does not stop the tests."""

    running = False

    def __getattr__(self, name: str) -> object:
        return getattr(reactor, name)


@pytest_twisted.ensureDeferred
async def test_log_file_in_json_lines(tmp_path: Path) -> None:
    from twisted.logger import LogLevel, eventsFromJSONLogFile

    config = parse_node_config({
        "data_dir": str(tmp_path), "api": {"listen": "tcp:0:interface=127.0.0.1"},
        "log": {"file": "node.log", "format": "json", "level": "info"},
    })
    node = NodeService(reactor, config)
    node.startService()
    await node.ready
    await node.stopService()
    with (tmp_path / "node.log").open() as stream:
        records = list(eventsFromJSONLogFile(stream))
    assert records
    assert any("node ready" in r.get("log_format", "") for r in records)
    assert all(r["log_level"] != LogLevel.debug for r in records)
