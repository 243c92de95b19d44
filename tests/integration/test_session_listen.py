"""A user edits `comm.listen` in the session.yaml the user may edit (docs/security.md), and the
node reads it again at its next start: a real `twistd perund` on anvil, two sessions open, the
node stopped, the edit made, the node started again (the audit's reproductions, adapted).

- a `unix:` socket in the node's data folder broke every later write of sessions.json;
- an `ssl:` endpoint naming /dev/zero as its key filled the node's memory at every start;
- one user's port taken by the other at start kept the owner's session closed for good.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from perund.cli.apiclient import ApiClient
from perund.cli.generate import Generated
from perund.errors import InvalidConfig
from tests.integration.daemons import Daemon, running


def _set_listen(session_file: Path, listen: str) -> None:
    document = yaml.safe_load(session_file.read_text())
    document["comm"]["listen"] = listen
    session_file.write_text(yaml.safe_dump(document))


def _listen(session_file: Path) -> str:
    listen: str = yaml.safe_load(session_file.read_text())["comm"]["listen"]
    return listen


def _restart(node: Daemon, **options: Any) -> int:
    """Stop and start `node`; where its log stood before (to read this start's lines)."""
    node.stop()
    mark = len(node.log.read_text())
    node.start(**options)
    return mark


def _wait_for_line(node: Daemon, mark: int, text: str, timeout: float = 90.0) -> str:
    """The first line after `mark` of the node's log with `text` in it."""
    deadline = time.monotonic() + timeout
    while True:
        for line in node.log.read_text()[mark:].splitlines():
            if text in line:
                return line
        assert node.proc is not None and node.proc.poll() is None, "the node died"
        assert time.monotonic() < deadline, (f"no line with {text!r} in the log:\n"
                                             + node.log.read_text()[mark:][-4000:])
        time.sleep(0.2)


def _open_configs(node: Daemon) -> set[str]:
    return {s["configFile"] for s in node.call("session_list")}


def _peak_memory_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the peak resident size
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


@pytest.mark.anvil
def test_a_unix_socket_in_the_data_folder_is_refused(anvil_setup: Generated,
                                                     tmp_path: Path) -> None:
    """Finding 1: bob's `unix:` socket where the node writes sessions.json.tmp before its
    rename. His session is not opened (one line says why), alice's is, and sessions.json is
    written: her new credential outlives the next restart."""
    files = {u.name: u.session_file for u in anvil_setup.users}
    data_dir = anvil_setup.node_config.parent / "data"
    with running(anvil_setup.node_config, workdir=tmp_path) as (node,):
        ids = {name: node.call("session_open", configFile=str(file))["sessionId"]
               for name, file in files.items()}
        _set_listen(files["bob"], f"unix:{data_dir}/sessions.json.tmp")
        mark = _restart(node)
        line = _wait_for_line(node, mark, f"could not open session {files['bob']}")
        assert "comm.listen" in line and "unix: is not allowed" in line, line
        assert "trying again" not in line
        node.wait_for_sessions(1)
        assert _open_configs(node) == {str(files["alice"])}
        assert not (data_dir / "sessions.json.tmp").exists()
        before = (data_dir / "sessions.json").read_text()
        made = node.call("session_createToken", sessionId=ids["alice"], scope="read",
                         label="after the restart")
        assert (data_dir / "sessions.json").read_text() != before
        node.stop()
        node.start()
        assert ApiClient(node.port, made["token"]).call("node_time") > 0  # it was kept


@pytest.mark.anvil
def test_an_ssl_key_file_is_never_read(anvil_setup: Generated, tmp_path: Path) -> None:
    """Finding 3: Twisted's parser read an `ssl:` endpoint's key file while parsing the
    string; /dev/zero took the node's memory at every start. Now nothing is read: bob's session
    is refused at once, alice's opens."""
    files = {u.name: u.session_file for u in anvil_setup.users}
    with running(anvil_setup.node_config, workdir=tmp_path) as (node,):
        for file in files.values():
            node.call("session_open", configFile=str(file))
        port = _listen(files["bob"]).split(":")[1]
        _set_listen(files["bob"], f"ssl:{port}:privateKey=/dev/zero:interface=127.0.0.1")
        # Capped: the node before the fix read until its memory ran out.
        mark = _restart(node, address_space=3 << 30)
        line = _wait_for_line(node, mark, f"could not open session {files['bob']}")
        assert "comm.listen" in line and "ssl: is not allowed" in line, line
        assert node.proc is not None
        assert _peak_memory_mib(node.proc.pid) < 1024
        node.wait_for_sessions(1)
        assert _open_configs(node) == {str(files["alice"])}
        reply = node.request("session_open", configFile=str(files["bob"]))
        assert reply["error"]["code"] == InvalidConfig.code
        assert "ssl: is not allowed" in reply["error"]["message"]


@pytest.mark.anvil
@pytest.mark.parametrize("squatter", ["alice", "bob"])
def test_a_session_cannot_take_anothers_port(anvil_setup: Generated, tmp_path: Path,
                                             squatter: str) -> None:
    """Finding 2: the squatter names the owner's peer port and the node restarts. Whichever
    opens first (alice's path sorts first), the owner's session opens and the squatter's is
    refused with a line that names no one, once: it is not tried again for the port."""
    files = {u.name: u.session_file for u in anvil_setup.users}
    (owner,) = set(files) - {squatter}
    with running(anvil_setup.node_config, workdir=tmp_path) as (node,):
        ids = {name: node.call("session_open", configFile=str(file))["sessionId"]
               for name, file in files.items()}
        _set_listen(files[squatter], _listen(files[owner]))
        mark = _restart(node)
        line = _wait_for_line(node, mark, f"could not open session {files[squatter]}")
        assert "comm.listen" in line and "another session's" in line, line
        for secret in (str(files[owner]), ids[owner][2:]):
            assert secret not in line.replace(str(files[squatter]), "")
        node.wait_for_sessions(1)
        assert _open_configs(node) == {str(files[owner])}
        time.sleep(3)  # a retry would come 2 s after the first try
        assert "trying again" not in node.log.read_text()[mark:]

        # Over the API, the same refusal, naming no one either.
        reply = node.request("session_open", configFile=str(files[squatter]))
        error = reply["error"]
        assert error["code"] == InvalidConfig.code and error["data"]["name"] == "comm.listen"
        assert ids[owner][2:] not in str(error) and str(files[owner]) not in str(error)
        assert _open_configs(node) == {str(files[owner])}
