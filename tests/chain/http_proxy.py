"""A small HTTP proxy for the chain client's tests: CONNECT tunnels and absolute-URL requests,
to host names it resolves from a table of its own (so a test can use names no resolver knows,
and a request that skipped the proxy fails). It records what each request asked of it."""

from __future__ import annotations

import http.client
import select
import socket
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from .scripted_node import serving


@dataclass
class Proxy:
    """`names` maps a host name to where it really is; `seen` holds (method, target,
    Proxy-Authorization) per request; `authorization` set: 407 without it."""

    names: dict[str, tuple[str, int]]
    authorization: str | None = None
    url: str = ""
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)


@contextmanager
def http_proxy(names: dict[str, tuple[str, int]],
               authorization: str | None = None) -> Iterator[Proxy]:
    """A running proxy; stopped on exit."""
    proxy = Proxy(names, authorization)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _admitted(self) -> bool:
            given = self.headers.get("Proxy-Authorization")
            proxy.seen.append((self.command, self.path, given))
            if proxy.authorization is not None and given != proxy.authorization:
                self.send_response(407, "Proxy Authentication Required")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False
            return True

        def do_CONNECT(self) -> None:
            if not self._admitted():
                return
            host, _, port = self.path.rpartition(":")
            upstream = socket.create_connection(proxy.names.get(host, (host, int(port))))
            self.send_response(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            _pump(self.connection, upstream)
            self.close_connection = True

        def do_POST(self) -> None:
            if not self._admitted():
                return
            target = urllib.parse.urlsplit(self.path)
            assert target.hostname is not None
            host, port = proxy.names.get(target.hostname, (target.hostname, target.port or 80))
            body = self.rfile.read(int(self.headers["Content-Length"]))
            upstream = http.client.HTTPConnection(host, port, timeout=10)
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("proxy-authorization", "connection")}
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request("POST", path, body, headers)
            reply = upstream.getresponse()
            payload = reply.read()
            upstream.close()
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.getheader("Content-Type", "text/plain"))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    with serving(Handler) as url:
        proxy.url = url
        yield proxy


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    try:
        while True:
            ready, _, _ = select.select([a, b], [], [], 10)
            if not ready:
                return
            for sock in ready:
                data = sock.recv(1 << 16)
                if not data:
                    return
                (b if sock is a else a).sendall(data)
    finally:
        b.close()
