"""The twistd plugin's options and the NodeService's ordered start and stop."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.plugin import getPlugins
from twisted.python.failure import Failure

from perund.config import parse_node_config
from perund.errors import ChainNotReachable, InvalidConfig
from perund.logs import standard_output_observer
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


def test_log_level_and_format_apply_to_standard_output_in_the_foreground(
        tmp_path: Path) -> None:
    """`twistd -n perund` with `log: {level: error, format: json}` and no file: the journal
    gets JSON lines from errors up (here: the failed start on an unreachable chain), not
    every level as text."""
    config = tmp_path / "perund.yaml"
    config.write_text(
        "log: {level: error, format: json}\n"
        "chain: {url: 'http://127.0.0.1:9', adjudicator: '0x" + "01" * 20 + "'}\n"
        "timeouts: {chain_connect: 1s}\n"
        # Any free API port: a node of the user's own may hold the default one.
        "api: {listen: 'tcp:0:interface=127.0.0.1'}\n")
    twistd = Path(sys.executable).with_name("twistd")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ran = subprocess.run([str(twistd), "-n", "--pidfile=", "perund", "--config", str(config)],
                         cwd=tmp_path, env=env, text=True, capture_output=True, timeout=120)
    assert ran.returncode == 1, ran
    records = [json.loads(line) for line in ran.stdout.splitlines() if line.strip()]
    assert records, ran
    levels = {record["log_level"]["name"] for record in records}
    assert levels <= {"error", "critical"}, levels
    assert any("start-up failed" in record.get("log_format", "") for record in records)


def test_standard_output_is_ours_only_where_twistd_logs_to_it() -> None:
    """A destination chosen on twistd's own command line (a file, syslog, a logger, or the
    daemon's twistd.log) stays twistd's."""
    log = parse_node_config({"log": {"level": "warn"}}).log
    ours = [{"nodaemon": True, "logfile": None}, {"nodaemon": False, "logfile": "-"}]
    theirs = [None, {"nodaemon": False, "logfile": None}, {"nodaemon": True, "logfile": "x.log"},
              {"nodaemon": True, "logfile": None, "syslog": True},
              {"nodaemon": True, "logfile": None, "logger": "some.factory"}]
    assert all(standard_output_observer(log, twistd) is not None for twistd in ours)
    assert all(standard_output_observer(log, twistd) is None for twistd in theirs)


def test_a_client_libraries_warnings_reach_the_log_only_at_debug() -> None:
    """One WebSocket client sending frames that are not UTF-8 wrote autobahn's warnings, a line
    or three per connection, 0.5 MB a second, past every limit of the API's own lines (the
    isolation review's finding)."""
    from twisted.logger import Logger as TwistedLogger
    from twisted.logger import LogLevel

    from perund.logs import _filtered

    def seen(level: str) -> list[str]:
        lines: list[str] = []
        observer = _filtered(lambda event: lines.append(event["log_format"]),
                             {"debug": LogLevel.debug, "info": LogLevel.info}[level])
        for namespace in ("autobahn.twisted.websocket.WebSocketServerProtocol", "perund.api"):
            log = TwistedLogger(namespace=namespace, observer=observer)
            log.warn(f"{namespace} warn")
            log.error(f"{namespace} error")
        return lines

    assert seen("info") == [
        "autobahn.twisted.websocket.WebSocketServerProtocol error", "perund.api warn",
        "perund.api error"]
    assert len(seen("debug")) == 4


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
    # A refused override is blamed on the option that gave it, not on the file.
    with pytest.raises(SystemExit):
        Options().parseOptions(["--config", str(config), "--chain-url", "not a url"])
    assert "chain.url (from --chain-url): an http(s)://" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        Options().parseOptions(["--config", str(config), "--api-listen", "tcp:x"])
    assert "api.listen (from --api-listen): not an endpoint" in capsys.readouterr().err
    # An empty --data-dir is refused as an empty data_dir in the file is (it used to mean the
    # working directory).
    with pytest.raises(SystemExit):
        Options().parseOptions(["--config", str(config), "--data-dir", ""])
    assert "data_dir (from --data-dir): a non-empty string" in capsys.readouterr().err
    # A problem of the file itself is still the file's.
    config.write_text("chain:\n  block_time: soon\n")
    with pytest.raises(SystemExit):
        Options().parseOptions(["--config", str(config), "--api-listen", "tcp:x"])
    err = capsys.readouterr().err
    assert "chain.block_time: " in err and "api.listen (from --api-listen)" in err


def test_a_taken_api_port_ends_the_command_before_a_daemon_forks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "perund.yaml"
    config.write_text("data_dir: data\n")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        listen = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        with pytest.raises(SystemExit) as refused:
            Options().parseOptions(["--config", str(config), "--api-listen", listen])
        assert refused.value.code == 1
        assert f"api.listen {listen}: the port is in use" in capsys.readouterr().err
    finally:
        taken.close()


async def _embedded_node(tmp_path: Path) -> NodeService:
    """A node of the smallest config (the embedded dev chain), started as twistd would."""
    config = tmp_path / "perund.yaml"
    config.write_text("data_dir: data\n")
    options = Options()
    options.parseOptions(["--config", str(config), "--api-listen", "tcp:0:interface=127.0.0.1"])
    node = NodeService(reactor, options["node_config"])
    node.startService()
    await node.ready
    return node


@pytest_twisted.ensureDeferred
async def test_node_starts_on_the_embedded_chain_and_stops(tmp_path: Path) -> None:
    node = await _embedded_node(tmp_path)
    assert node.chain.chain_id == 1337
    assert node.chain.adjudicator is not None
    await node.stopService()
    assert not node.chain.pool.started


@pytest_twisted.ensureDeferred
async def test_an_embedded_chain_that_dies_under_the_node_is_reported_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("perund.node_devchain.DEVCHAIN_CHECK", 0.05)
    node = await _embedded_node(tmp_path)
    assert node.devchain is not None and node.devchain.exit_status() is None
    with capturedLogs() as events:
        node.devchain._process.kill()  # type: ignore[union-attr]  # kill -9
        for _ in range(200):
            if any(e.get("log_level") is LogLevel.critical for e in events):
                break
            await deferLater(reactor, 0.025, lambda: None)
        await deferLater(reactor, 0.3, lambda: None)  # later looks say nothing more
    said = [formatEvent(e) for e in events if e.get("log_level") is LogLevel.critical]
    assert len(said) == 1
    assert said[0].startswith("the embedded dev chain (anvil) exited with status -9: ")
    assert "Restart it" in said[0]
    await node.stopService()


@pytest_twisted.ensureDeferred
async def test_unreachable_chain_fails_start_up_clearly(tmp_path: Path) -> None:
    config = parse_node_config({
        "data_dir": str(tmp_path),
        "chain": {"url": "http://127.0.0.1:9", "adjudicator": "0x" + "01" * 20},
        "timeouts": {"chain_connect": "2s"},
    })
    (tmp_path / "users").mkdir()
    config = replace(config, sessions=replace(
        config.sessions, config_dirs=(tmp_path / "users", tmp_path / "alise")))
    node = NodeService(NotRunningReactor(), config)
    with capturedLogs() as events:
        node.startService()
        with pytest.raises(ChainNotReachable):
            await node.ready
    # A mistyped folder of session files is named at once (found by an audit), the real one not.
    said = [formatEvent(e) for e in events if "sessions.config_dirs" in formatEvent(e)]
    assert said == [f"sessions.config_dirs: {tmp_path / 'alise'} is not a folder: no session "
                    "file can come from it (a typo?)"]
    await node.stopService()


class NotRunningReactor:
    """The global reactor, but reporting not running so a failed start does not stop the tests:
    what waits for it to run is kept in `when_running`, never called."""

    running = False

    def __init__(self) -> None:
        self.when_running: list[object] = []

    def callWhenRunning(self, function: object, *args: object, **kwargs: object) -> None:
        self.when_running.append(function)

    def __getattr__(self, name: str) -> object:
        return getattr(reactor, name)


@pytest_twisted.ensureDeferred
async def test_log_file_in_json_lines(tmp_path: Path) -> None:
    from twisted.logger import LogLevel, eventsFromJSONLogFile

    config = parse_node_config({
        "data_dir": str(tmp_path), "api": {"listen": "tcp:0:interface=127.0.0.1"},
        "log": {"file": str(tmp_path / "node.log"), "format": "json", "level": "info"},
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


@pytest_twisted.ensureDeferred
async def test_a_start_that_fails_before_the_reactor_runs_stops_it_once_it_runs(
        tmp_path: Path) -> None:
    """A data_dir that is a file fails at once, inside `startService`, before twistd runs the
    reactor: the stop waits for the reactor, or the process would live on serving nothing."""
    (tmp_path / "data").write_text("a file\n")
    config = parse_node_config({"data_dir": str(tmp_path / "data")})
    not_running = NotRunningReactor()
    node = NodeService(not_running, config)
    failed: list[Failure] = []
    node.ready.addErrback(failed.append)
    node.startService()
    (failure,) = failed
    assert failure.check(InvalidConfig) and re.search(r"data_dir .*data is not a folder",
                                                      failure.getErrorMessage())
    assert not_running.when_running == [node._stop_failed]
    assert node.devchain is not None and not node.devchain.url  # nothing was started
    await node.stopService()


@pytest_twisted.ensureDeferred
async def test_a_second_node_on_the_same_data_dir_is_refused_before_it_starts_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = parse_node_config({"data_dir": str(tmp_path),
                                "api": {"listen": "tcp:0:interface=127.0.0.1"}})
    first = NodeService(reactor, config)
    first.startService()
    await first.ready
    try:
        second = NodeService(NotRunningReactor(), config)
        failed: list[Failure] = []
        second.ready.addErrback(failed.append)
        second.startService()
        (failure,) = failed
        assert failure.check(InvalidConfig) and f"is in use by another perund (pid " \
            f"{os.getpid()}); one node per data folder" in failure.getErrorMessage()
        assert second.devchain is not None and not second.devchain.url
        await second.stopService()
        # Before it forks a daemon, `twistd perund` looks too: the line on the terminal and
        # status 1, not a daemon that says nothing and exits 0 (found by an audit).
        file = tmp_path / "perund.yaml"
        file.write_text(f"data_dir: {tmp_path}\n")
        with pytest.raises(SystemExit) as refused:
            Options().parseOptions(["--config", str(file), "--api-listen", "tcp:0"])
        assert refused.value.code == 1
        assert f"is in use by another perund (pid {os.getpid()})" in capsys.readouterr().err
    finally:
        await first.stopService()
    # The first one's stop let go of the folder.
    third = NodeService(reactor, config)
    third.startService()
    await third.ready
    await third.stopService()


@pytest_twisted.ensureDeferred
async def test_a_log_file_that_cannot_be_written_fails_start_up_in_one_line(
        tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    config = parse_node_config({"data_dir": str(tmp_path / "data"),
                                "log": {"file": str(tmp_path / "folder")}})
    node = NodeService(NotRunningReactor(), config)
    failed: list[Failure] = []
    node.ready.addErrback(failed.append)
    node.startService()
    (failure,) = failed
    assert failure.check(InvalidConfig)
    assert failure.getErrorMessage() == f"log.file {tmp_path / 'folder'}: cannot write it: " \
                                        "is a directory"
    await node.stopService()


def test_the_chain_url_may_come_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An API key in the URL stays off the command line (`ps` shows it to every local user)."""
    config = tmp_path / "perund.yaml"
    config.write_text("chain:\n  adjudicator: '0x" + "01" * 20 + "'\n")
    monkeypatch.setenv("PERUND_CHAIN_URL", "https://node.example/v3/KEY")
    options = Options()
    options.parseOptions(["--config", str(config), "--api-listen", "tcp:0"])
    assert options["node_config"].chain.url == "https://node.example/v3/KEY"
    options = Options()
    options.parseOptions(["--config", str(config), "--chain-url", "http://127.0.0.1:8545",
                          "--api-listen", "tcp:0"])
    assert options["node_config"].chain.url == "http://127.0.0.1:8545"  # the option wins
    monkeypatch.setenv("PERUND_CHAIN_URL", "ftp://node.example/KEY")
    with pytest.raises(SystemExit):
        Options().parseOptions(["--config", str(config)])
    err = capsys.readouterr().err
    assert "chain.url (from PERUND_CHAIN_URL)" in err and "KEY" not in err
