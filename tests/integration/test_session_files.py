"""`session_open` over a real `twistd -n perund`, aimed at files no session config should be:
each gets a JSON-RPC error within 10 s that quotes nothing of the file, the node keeps answering
within 3 s, and the real sessions still open."""

from __future__ import annotations

import os
import time
from pathlib import Path

from perund.errors import InvalidConfig
from tests.integration.daemons import generated, running

MARKER = "ZQX-secret-marker-9146"


def test_session_open_cannot_be_turned_against_the_node(tmp_path: Path) -> None:
    setup = generated(tmp_path / "node")
    alice_folder = setup.users[0].session_file.parent
    fifo = alice_folder / "pipe.yaml"
    os.mkfifo(fifo)  # in an allowed folder: only the file checks stand between it and a hang
    sparse = alice_folder / "huge.yaml"
    with sparse.open("wb") as out:
        out.write(MARKER.encode())
        out.truncate(300 * 1024 * 1024)
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(f"on_chain: {MARKER}\n")
    (alice_folder / "notes.yaml").write_text(f"{MARKER}: [\n")
    with running(setup.node_config, workdir=tmp_path) as (node,):
        token_file = node.token_path
        hostile = [Path("/dev/zero"), fifo, sparse, Path("/etc/passwd"), token_file,
                   alice_folder, outside, alice_folder / "password",
                   alice_folder / "keystore" / "on-chain.json", alice_folder / "notes.yaml",
                   alice_folder / ".." / ".." / "elsewhere.yaml"]
        secrets = [MARKER, token_file.read_text().strip(),
                   (alice_folder / "password").read_text().strip(), "root:x:0:0"]
        for path in hostile:
            started = time.monotonic()
            reply = node.request("session_open", configFile=str(path))
            took = time.monotonic() - started
            assert took < 10, (path, took)
            error = reply["error"]
            assert error["code"] == InvalidConfig.code, (path, error)
            assert str(error).count("\n") == 0
            for secret in secrets:
                assert secret not in str(error), (path, error)
            started = time.monotonic()
            assert node.call("node_time") > 0
            assert time.monotonic() - started < 3, path
        log = node.log.read_text()
        for secret in secrets[:3]:
            assert secret not in log
        for user in setup.users:
            opened = node.call("session_open", configFile=str(user.session_file))
            assert opened["sessionId"].startswith("0x")
