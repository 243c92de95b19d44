"""A scripted JSON-RPC node on 127.0.0.1: real HTTP/1.1 with keep-alive, answers chosen by a
test. It plays the broken or hostile nodes (dropped connections, malformed replies) that anvil
never is; the real chain tests run on anvil and the embedded chain."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, bytes] | tuple[int, bytes, bool] | None
"""(HTTP status, body[, close the connection after it, as an idle timeout would, without
saying so]) to send, or None to close the connection without answering."""


def answer(request: Any, result: Any) -> bytes:
    """The JSON-RPC reply to `request` with `result`."""
    return json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).encode()


def error(request: Any, code: int, message: str, **data: Any) -> bytes:
    """The JSON-RPC error reply to `request` (with `data=...` if given)."""
    return json.dumps({"jsonrpc": "2.0", "id": request["id"],
                       "error": {"code": code, "message": message, **data}}).encode()


@dataclass
class ScriptedNode:
    """What the node saw; `respond(request, use)` decides each reply (`use`: the how-manieth
    request on its connection, from 1)."""

    respond: Callable[[Any, int], Reply]
    url: str = ""
    connections: int = 0
    closed: int = 0
    requests: list[Any] = field(default_factory=list)
    targets: list[tuple[str, str | None]] = field(default_factory=list)
    """Each request's path and Authorization header."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_closed(self, count: int, timeout: float = 10.0) -> None:
        """Wait until the node has closed `count` connections."""
        deadline = time.monotonic() + timeout
        while self.closed < count:
            assert time.monotonic() < deadline, "the node did not close the connection"
            time.sleep(0.005)


@contextmanager
def scripted_node(respond: Callable[[Any, int], Reply],
                  tls: ssl.SSLContext | None = None) -> Iterator[ScriptedNode]:
    """A running scripted node (HTTPS with `tls`, a server context); stopped on exit."""
    node = ScriptedNode(respond)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def setup(self) -> None:
            super().setup()
            self.uses = 0
            with node.lock:
                node.connections += 1

        def finish(self) -> None:
            super().finish()
            with node.lock:
                node.closed += 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = json.loads(body)
            self.uses += 1
            with node.lock:
                node.requests.append(request)
                node.targets.append((self.path, self.headers.get("Authorization")))
            reply = node.respond(request, self.uses)
            if reply is None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            status, payload = reply[0], reply[1]
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            if len(reply) == 3 and reply[2]:
                self.wfile.flush()
                self.close_connection = True

    with serving(Handler, tls) as url:
        node.url = url
        yield node


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler],
            tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """A threaded HTTP(S) server on 127.0.0.1 with `handler`, while the block runs; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
