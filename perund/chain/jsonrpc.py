"""JSON-RPC 2.0 to an Ethereum node over HTTP, with the standard library only.

What `ChainClient` stands on instead of web3 (whose import alone costs a node start ~0.5 s): a
transport answers `request(method, params)` with the reply's `result`, raises `ChainRpcError`
(code, message, data) for a JSON-RPC error object, and `ProtocolError` for a reply that is not
JSON-RPC. Transport failures stay `OSError`s (the client turns them into ChainNotReachable).

Each chain pool thread owns one keep-alive connection: the pool runs calls in parallel, and a
connection carries one request at a time. A node or a proxy closes idle connections when it
likes; a request that finds its reused connection closed is sent once more on a fresh one. That
resend is safe for every request the node makes, `eth_sendRawTransaction` included: a signed
transaction with its nonce is mined at most once however often it is handed over.

Replies are untrusted: the value helpers at the end (`quantity`, `data_bytes`, ...) decode the
hex of the Ethereum JSON-RPC format and refuse anything else with a ProtocolError.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import re
import select
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from perund.chain.call_times import ChainCallTimes
from perund.chain.proxy import proxy_route
from perund.chain.urls import basic_credentials, host_port, shown_url
from perund.channel.types import Address
from perund.errors import ChainRpcError, InvalidConfig, ProtocolError

MAX_REPLY_BYTES = 32 * 1024 * 1024
"""The largest reply read: a guard against a node that never stops sending, far above any
honest one (a 5,000-block eth_getLogs of a busy Adjudicator is a few MiB). Parsed, a reply
takes some three times its size, and several can be read at once: 256 MiB replies took the
chain review's node to 1.8 GB."""

REQUEST_DEADLINE_FACTOR = 3
"""A whole request (connect, send, the reply's every byte) ends after this many times the
transport's `timeout`, however steadily a node trickles its reply: `timeout` bounds each read
alone, and a reply of a byte a second would otherwise stall the watcher for minutes."""

_HEX_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")
_HEX_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                     ConnectionAbortedError)
"""What sending on a connection the node has closed meanwhile raises."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer of a batch: its result, or the error the node gave instead."""

    result: Any = None
    error: ChainRpcError | None = None


class Transport(Protocol):
    """A way to a chain node's JSON-RPC methods; safe to call from the thread it serves."""

    url: str
    via: str | None
    """The proxy the transport goes through, as logs show it (`perund.chain.proxy`)."""

    def request(self, method: str, params: Sequence[Any]) -> Any:
        """The `result` of `method(params)`; ChainRpcError for the node's error object."""

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Answer] | None:
        """The answers to `calls` in their order, or None when the node takes no batches."""

    def close(self) -> None:
        """Release the connections (once no thread uses the transport any more)."""


def malformed(url: str, method: str, what: str) -> ProtocolError:
    """The error for a reply that is not what the Ethereum JSON-RPC API promises."""
    return ProtocolError(f"the chain at {url} sent a malformed reply to {method}: {what}",
                         chainUrl=url, method=method)


def _rpc_error(url: str, method: str, error: Any) -> ChainRpcError:
    if not isinstance(error, Mapping):
        raise malformed(url, method, "an error that is not an object")
    code, message = error.get("code"), error.get("message", "")
    if isinstance(code, bool) or not isinstance(code, int) or not isinstance(message, str):
        raise malformed(url, method, "an error without an integer code and a text message")
    return ChainRpcError(method, code, message, rpc_data=error.get("data"),
                         has_data="data" in error)


def answer_of(url: str, method: str, reply: Any) -> Answer:
    """The Answer in one parsed reply object (its id already matched)."""
    if not isinstance(reply, Mapping):
        raise malformed(url, method, "not a JSON object")
    error = reply.get("error")
    if error is not None:
        return Answer(error=_rpc_error(url, method, error))
    if "result" not in reply:
        raise malformed(url, method, "neither a result nor an error")
    return Answer(result=reply["result"])


class _Deadlines:
    """Cuts the connections of requests past their deadline: one daemon thread for the
    process, started with the first request, that shuts a late request's socket down (its
    blocking read then fails at once, and the request with it)."""

    TICK = 0.25

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[int, tuple[float, http.client.HTTPConnection]] = {}
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, connection: http.client.HTTPConnection, seconds: float) -> int:
        """Cut `connection` unless `release` comes within `seconds`; the key to release."""
        with self._lock:
            key = next(self._keys)
            self._due[key] = (time.monotonic() + seconds, connection)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="perund-rpc-deadlines",
                                                daemon=True)
                self._thread.start()
        return key

    def release(self, key: int) -> bool:
        """The request is over: whether it was in time (False: its connection was cut)."""
        with self._lock:
            return self._due.pop(key, None) is not None

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            with self._lock:
                late = [key for key, (due, _) in self._due.items() if due <= now]
                cut = [self._due.pop(key)[1] for key in late]
            for connection in cut:
                sock = connection.sock
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)


_deadlines = _Deadlines()


class HttpTransport:
    """JSON-RPC over HTTP(S) with one keep-alive connection per calling thread.

    `timeout` bounds the connect and every read (a node that accepts and never answers is
    ChainNotReachable after it, like one that refuses), and `REQUEST_DEADLINE_FACTOR` times it
    the whole request.
    """

    def __init__(self, url: str, *, timeout: float = 10.0,
                 call_times: ChainCallTimes | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidConfig("chain.url: the node's chain client speaks JSON-RPC over "
                                "http:// or https:// only", name="chain.url",
                                value=shown_url(url), requirement="an http(s):// URL")
        self.url = shown_url(url)
        """The URL as errors and logs show it (`shown_url`); the transport alone keeps the
        rest."""
        self.timeout = timeout
        self.call_times = call_times if call_times is not None else ChainCallTimes()
        """How long each exchange took, answered or not."""
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        try:
            self._port = parts.port
        except ValueError:
            raise InvalidConfig("chain.url: the port is not a number from 0 to 65535",
                                name="chain.url", value=shown_url(url),
                                requirement="an http(s):// URL") from None
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": "perund"}
        credentials = basic_credentials(parts)
        if credentials is not None:
            self._headers["Authorization"] = credentials
        self._route = proxy_route(parts.scheme, self._host)
        self.via = self._route.shown if self._route is not None else None
        if self._route is not None and not self._https:
            # A proxy takes a plain HTTP request with the absolute URL (no user:password@),
            # and its own credentials beside the chain node's.
            self._path = f"http://{host_port(self._host, self._port)}{self._path}"
            self._headers.update(self._route.headers)
        self._local = threading.local()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()
        """Every thread's connection, for `close`."""

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def request(self, method: str, params: Sequence[Any]) -> Any:
        """The `result` of one call; ChainRpcError for the node's error object."""
        request_id = self._next_id()
        reply = self._exchange(method, {"jsonrpc": "2.0", "id": request_id, "method": method,
                                        "params": list(params)})
        if not isinstance(reply, Mapping) or reply.get("id") != request_id:
            raise malformed(self.url, method, "not the answer to the request sent")
        answer = answer_of(self.url, method, reply)
        if answer.error is not None:
            raise answer.error
        return answer.result

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Answer] | None:
        """The answers to `calls` in one round trip; None when the node answers the batch with
        anything but one answer to each (a node that takes no batches sends one error)."""
        if not calls:
            return []
        ids = [self._next_id() for _ in calls]
        body = [{"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
                for request_id, (method, params) in zip(ids, calls, strict=True)]
        replies = self._exchange("batch", body)
        if not isinstance(replies, list) or len(replies) != len(calls):
            return None
        by_id = {reply.get("id"): reply for reply in replies if isinstance(reply, Mapping)}
        if set(by_id) != set(ids):
            return None
        return [answer_of(self.url, method, by_id[request_id])
                for request_id, (method, _) in zip(ids, calls, strict=True)]

    def close(self) -> None:
        """Close every thread's connection (once the pool's threads have stopped)."""
        with self._lock:
            connections, self._open = self._open, set()
        for connection in connections:
            connection.close()

    def _drop(self) -> None:
        """Close the calling thread's connection: the next request opens a new one."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            self._local.connection = None
            with self._lock:
                self._open.discard(connection)
            connection.close()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection and whether it served a request before."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None and _closed_by_peer(connection):
            self._drop()
            connection = None
        if connection is not None:
            return connection, True
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        route = self._route
        if route is None:
            connection = kind(self._host, self._port, timeout=self.timeout)
        else:
            connection = kind(route.host, route.port, timeout=self.timeout)
            if self._https:
                # TLS to the chain node inside a CONNECT tunnel (its certificate is checked
                # against the chain node's name, not the proxy's).
                connection.set_tunnel(self._host, self._port, headers=route.headers)
        self._local.connection = connection
        with self._lock:
            self._open.add(connection)
        return connection, False

    def _exchange(self, method: str, message: Any) -> Any:
        """POST `message`, the parsed JSON reply. OSError when the node cannot be reached."""
        started = time.monotonic()
        try:
            return self._exchange_once(method, message)
        finally:
            self.call_times.add(time.monotonic() - started)

    def _exchange_once(self, method: str, message: Any) -> Any:
        """`_exchange` without its timing."""
        body = json.dumps(message, separators=(",", ":")).encode()
        for attempt in (1, 2):
            connection, reused = self._connection()
            watch = _deadlines.watch(connection, REQUEST_DEADLINE_FACTOR * self.timeout)
            try:
                try:
                    connection.request("POST", self._path, body, self._headers)
                    response = connection.getresponse()
                    payload = self._read(method, response)
                finally:
                    if not _deadlines.release(watch):
                        # Cut at its deadline: whatever the read raised, or the bytes it
                        # returned, the reply is not whole.
                        self._drop()
                        raise TimeoutError(f"no whole reply within "
                                           f"{REQUEST_DEADLINE_FACTOR * self.timeout:g} s")
            except TimeoutError:
                self._drop()
                raise
            except _STALE_CONNECTION:
                self._drop()
                if reused and attempt == 1:
                    continue
                raise
            except http.client.HTTPException as exc:  # not HTTP: a status line of junk, ...
                self._drop()
                raise malformed(self.url, method, f"broken HTTP ({type(exc).__name__})") \
                    from None
            except BaseException:
                self._drop()  # a half-read reply would garble the next one
                raise
            if response.will_close:
                self._drop()
            if response.status != 200:
                raise ConnectionError(f"HTTP status {response.status} {response.reason}"[:120])
            try:
                return json.loads(payload)
            except ValueError:
                raise malformed(self.url, method, "not JSON") from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _read(self, method: str, response: http.client.HTTPResponse) -> bytes:
        try:
            if response.length is not None:  # a Content-Length: read exactly that much
                if response.length > MAX_REPLY_BYTES:
                    raise malformed(self.url, method,
                                    f"a reply of {response.length} bytes (refused)")
                return response.read()
            chunks, size = [], 0
            while chunk := response.read(1 << 16):
                size += len(chunk)
                if size > MAX_REPLY_BYTES:
                    raise malformed(self.url, method,
                                    f"a reply larger than {MAX_REPLY_BYTES >> 20} MiB (refused)")
                chunks.append(chunk)
            return b"".join(chunks)
        except http.client.IncompleteRead as exc:
            raise ConnectionError(f"the reply was cut off after {len(exc.partial)} bytes") \
                from None
        except http.client.HTTPException as exc:
            raise malformed(self.url, method, f"broken HTTP ({type(exc).__name__})") from None


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """Whether the node closed this idle connection (it is readable: EOF, or junk)."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


# Values of the Ethereum JSON-RPC format, both ways. The decoders take the URL and the method
# only to name them in the error.

def hex_quantity(value: int) -> str:
    """An integer as a JSON-RPC quantity (`0x` hex, no leading zeros)."""
    return hex(value)


def hex_data(value: bytes) -> str:
    """Bytes as JSON-RPC data (`0x` and two hex digits a byte)."""
    return "0x" + value.hex()


def block_tag(block: int | str) -> str:
    """A block number or tag ("latest", "pending", "earliest") as a JSON-RPC block parameter."""
    return hex_quantity(block) if isinstance(block, int) else block


def quantity(value: Any, url: str, method: str, what: str) -> int:
    """A JSON-RPC quantity (at most 256 bits) as an int; ProtocolError for anything else."""
    if not isinstance(value, str) or not _HEX_QUANTITY.fullmatch(value):
        raise malformed(url, method, f"{what} is not a hex quantity")
    return int(value, 16)


def data_bytes(value: Any, url: str, method: str, what: str, size: int | None = None) -> bytes:
    """JSON-RPC data as bytes, of `size` bytes if given; ProtocolError for anything else."""
    if not isinstance(value, str) or not _HEX_DATA.fullmatch(value):
        raise malformed(url, method, f"{what} is not hex data")
    raw = bytes.fromhex(value[2:])
    if size is not None and len(raw) != size:
        raise malformed(url, method, f"{what} has {len(raw)} bytes, not {size}")
    return raw


def address(value: Any, url: str, method: str, what: str) -> Address:
    """A 20-byte address from JSON-RPC data."""
    return Address(data_bytes(value, url, method, what, 20))


def field(reply: Any, key: str, url: str, method: str) -> Any:
    """`reply[key]` of a reply that must be an object holding it."""
    if not isinstance(reply, Mapping) or key not in reply:
        raise malformed(url, method, f"no {key}")
    return reply[key]
