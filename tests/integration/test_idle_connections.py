"""A real `twistd -n perund` with its default limits, flooded by a neighbour: 500 connections
to the API port and 500 to a session's peer port that send nothing. The node keeps answering,
and closes at least 95 % of each set within 45 s (the API's request timeout is 30 s; the peer
port closes handshakes without a Hello after 3 s, and refuses most of a one-host flood at once)."""

from __future__ import annotations

import errno
import socket
import time
from pathlib import Path

import pytest

from tests.integration.daemons import generated, running

FLOOD = 500


def _open(port: int) -> list[socket.socket]:
    opened = []
    for _ in range(FLOOD):
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()  # refused at once: already as good as closed
            continue
        sock.setblocking(False)
        opened.append(sock)
    return opened


def _closed(sock: socket.socket) -> bool:
    """Whether the node closed `sock`: what it sent first (a peer port's Hello) is read past,
    so that a closed connection is not taken for an open one with bytes still unread."""
    try:
        while True:
            if sock.recv(4096) == b"":
                return True
    except BlockingIOError:
        return False
    except OSError as exc:
        return exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN)


@pytest.mark.slow
def test_idle_connections_do_not_starve_the_node(tmp_path: Path) -> None:
    setup = generated(tmp_path / "node")
    with running(setup.node_config, workdir=tmp_path) as (node,):
        alice = setup.users[0]
        node.call("session_open", configFile=str(alice.session_file))
        api = _open(node.port)
        peers = _open(alice.comm_port)
        try:
            started = time.monotonic()
            worst = 0.0
            while time.monotonic() - started < 45:
                asked = time.monotonic()
                assert node.call("node_time") > 0
                worst = max(worst, time.monotonic() - asked)
                closed_api = FLOOD - len(api) + sum(_closed(s) for s in api)
                closed_peer = FLOOD - len(peers) + sum(_closed(s) for s in peers)
                if closed_api >= 0.95 * FLOOD and closed_peer >= 0.95 * FLOOD:
                    break
                time.sleep(1.0)
            assert closed_api >= 0.95 * FLOOD, closed_api
            assert closed_peer >= 0.95 * FLOOD, closed_peer
            assert worst < 3.0, worst
        finally:
            for sock in api + peers:
                sock.close()
        log = node.log.read_text()
        # One warning line per interval for each flood, not one per connection.
        assert log.count("incoming peer connections: ") < 10
