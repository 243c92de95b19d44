"""A small synchronous client of the node's API: JSON-RPC over HTTP, pushes over WebSocket.

For programs that drive a node from outside (perund-cli, the walkthrough, tests, scripts):
blocking calls, no reactor. Errors from the node raise `ApiError` carrying the JSON-RPC error
object. Failing to talk to the node at all raises `NodeUnreachable` (an `OSError`), and a token
the node refuses raises `AuthFailed`.

Two WebSocket clients: `Pushes` reads in the caller's thread (tests and the walkthrough wait
for one push at a time); `PushStream` reads in a background thread and hands every push to a
callback, while calls on the same socket may come from any thread (the interactive CLI).
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import ExitStack
from typing import Any

from twisted.logger import Logger
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

log = Logger(namespace="perund.cli.apiclient")

NOTIFICATION_METHOD = "perund_notification"
"""The JSON-RPC method of the node's pushes (docs/api.md)."""

CLIENT_TIMEOUT = -1.0
"""`timeout` value meaning "the client's own timeout" (None means no limit)."""


class ApiError(Exception):
    """The node answered with a JSON-RPC error."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        super().__init__(f"{method}: {error.get('message')} (code {error.get('code')})")
        self.method = method
        self.code: int = int(error.get("code", 0))
        self.error = error


class NodeUnreachable(OSError):
    """No JSON-RPC answer from the node: nothing listens, the connection broke, the answer did
    not come in time, or what answered is not the node's API."""


class AuthFailed(Exception):
    """The node refused the bearer token (HTTP 401)."""


def _host_in_url(host: str) -> str:
    # An IPv6 literal needs brackets in a URL.
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _reason(exc: BaseException) -> str:
    """A short human reason for a transport failure ("connection refused")."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            return _reason(reason)
        return str(reason)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, (ConnectionResetError, http.client.RemoteDisconnected)):
        return "the connection was closed before the answer came"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class ApiClient:
    """JSON-RPC 2.0 calls to `http://host:port/rpc` with a bearer token.

    Safe to use from several threads at once: every call is its own HTTP request.
    """

    def __init__(self, port: int, token: str, host: str = "127.0.0.1",
                 timeout: float = 300.0) -> None:
        self.host, self.port = host, port
        self.url = f"http://{_host_in_url(host)}:{port}/rpc"
        self.ws_url = f"ws://{_host_in_url(host)}:{port}/ws"
        self.token = token
        self.timeout = timeout
        self._ids = itertools.count(1)
        # The node is on loopback or a known host: an HTTP(S)_PROXY of the environment
        # would only get in the way.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def invoke(self, method: str, params: dict[str, Any],
               timeout: float | None = CLIENT_TIMEOUT) -> dict[str, Any]:
        """The whole JSON-RPC response object of one call.

        `timeout` bounds each wait for the node (seconds; None waits as long as it takes, the
        default is the client's). NodeUnreachable or AuthFailed when there is no answer.
        """
        body = json.dumps({"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                           "params": params}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
        wait = self.timeout if timeout is not None and timeout < 0 else timeout
        try:
            with self._opener.open(request, timeout=wait) as answer:
                data = answer.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise AuthFailed("the node refused the API token") from None
            raise NodeUnreachable(f"not the node's API: HTTP {exc.code} from {self.url}") \
                from None
        except (OSError, http.client.HTTPException) as exc:
            raise NodeUnreachable(_reason(exc)) from None
        try:
            reply = json.loads(data)
        except ValueError:
            raise NodeUnreachable(f"not a JSON-RPC answer from {self.url}") from None
        if not isinstance(reply, dict):
            raise NodeUnreachable(f"not a JSON-RPC answer from {self.url}")
        return reply

    def request(self, method: str, **params: Any) -> dict[str, Any]:
        """The whole JSON-RPC response object."""
        return self.invoke(method, params)

    def call(self, method: str, **params: Any) -> Any:
        """The result; ApiError for an error response."""
        return self.result(method, params)

    def result(self, method: str, params: dict[str, Any],
               timeout: float | None = CLIENT_TIMEOUT) -> Any:
        """The result of `method(params)` (see `invoke` for `timeout`); ApiError for an error
        response."""
        reply = self.invoke(method, params, timeout)
        if "error" in reply:
            raise ApiError(method, reply["error"])
        return reply.get("result")

    def wait_until_up(self, timeout: float = 60.0,
                      alive: Callable[[], bool] = lambda: True) -> None:
        """Poll `node_time` until the node answers (or `alive()` turns false)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call("node_time")
                return
            except OSError:
                if not alive() or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def pushes(self) -> Pushes:
        """A WebSocket connection for subscriptions, read in the caller's thread."""
        return Pushes(self.ws_url, self.token)

    def push_stream(self, on_push: Callable[[str, Any], None],
                    on_close: Callable[[BaseException | None], None] | None = None,
                    open_timeout: float = 10.0) -> PushStream:
        """A WebSocket connection read by a background thread (see `PushStream`)."""
        return PushStream(self.ws_url, self.token, on_push, on_close, open_timeout)


class Pushes:
    """A WebSocket client: JSON-RPC calls on the socket and the notifications pushed on it."""

    def __init__(self, url: str, token: str) -> None:
        self._exit = ExitStack()
        # The credential goes in a header: a URL may end up in logs along the way.
        self.ws: ClientConnection = self._exit.enter_context(connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}, proxy=None))
        self.pushed: list[dict[str, Any]] = []
        self._ids = 0

    def call(self, method: str, **params: Any) -> Any:
        """Call `method` over the socket; pushes that arrive first are kept."""
        self._ids += 1
        self.ws.send(json.dumps({"jsonrpc": "2.0", "id": self._ids, "method": method,
                                 "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self._ids:
                if "error" in message:
                    raise ApiError(method, message["error"])
                return message["result"]
            self.pushed.append(message["params"]["result"])

    def wait(self, matches: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> Any:
        """The first push (kept or arriving) that `matches`."""
        deadline = time.monotonic() + timeout
        while True:
            for push in self.pushed:
                if matches(push):
                    self.pushed.remove(push)
                    return push
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching notification arrived")
            message = json.loads(self.ws.recv(timeout=left))
            if "params" in message:
                self.pushed.append(message["params"]["result"])

    def close(self) -> None:
        """Close the socket."""
        self._exit.close()


class PushStream:
    """One WebSocket to the node, read by a daemon thread.

    `call` may be used from any thread and waits for its own reply; every push goes to
    `on_push(subscription_id, result)` in the reader thread, in the order the node sent them.
    When the socket ends other than by `close`, `on_close(error)` runs once in the reader thread
    (error is None for a clean close by the node). Connecting raises NodeUnreachable or
    AuthFailed.
    """

    def __init__(self, ws_url: str, token: str,
                 on_push: Callable[[str, Any], None],
                 on_close: Callable[[BaseException | None], None] | None = None,
                 open_timeout: float = 10.0) -> None:
        self._on_push = on_push
        self._on_close = on_close
        self._ids = itertools.count(1)
        self._waiting: dict[int, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._closing = False
        self.closed = threading.Event()
        try:
            self._ws = connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"},
                               open_timeout=open_timeout, proxy=None)
        except InvalidStatus as exc:
            if exc.response.status_code == 401:
                raise AuthFailed("the node refused the API token") from None
            raise NodeUnreachable(f"not the node's API: HTTP {exc.response.status_code} from "
                                  f"{ws_url}") from None
        except (InvalidHandshake, InvalidURI) as exc:
            raise NodeUnreachable(f"no WebSocket at {ws_url}: {exc}") from None
        except OSError as exc:
            raise NodeUnreachable(_reason(exc)) from None
        self._reader = threading.Thread(target=self._read, name="perund-pushes", daemon=True)
        self._reader.start()

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> Any:
        """Call `method` over the socket and wait for its reply (ApiError for an error)."""
        request_id = next(self._ids)
        reply: Future[dict[str, Any]] = Future()
        with self._lock:
            if self.closed.is_set():
                raise NodeUnreachable("the WebSocket to the node is closed")
            self._waiting[request_id] = reply
        try:
            self._ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                                      "params": params}))
            message = reply.result(timeout)
        except ConnectionClosed:
            raise NodeUnreachable("the WebSocket to the node closed") from None
        except FutureTimeout:
            raise NodeUnreachable(f"no answer over the WebSocket within {timeout:g} s") \
                from None
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)
        if "error" in message:
            raise ApiError(method, message["error"])
        return message.get("result")

    def _read(self) -> None:
        error: BaseException | None = None
        try:
            for raw in self._ws:
                self._dispatch(raw)
        except ConnectionClosed as exc:
            error = exc
        except Exception as exc:  # the socket broke in a way websockets does not wrap
            error = exc
        finally:
            with self._lock:
                self.closed.set()
                waiting = list(self._waiting.values())
                self._waiting.clear()
            for future in waiting:
                if not future.done():
                    future.set_exception(NodeUnreachable("the WebSocket to the node closed"))
            if not self._closing and self._on_close is not None:
                self._on_close(error)

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            log.warn("the node sent a WebSocket message that is not JSON; ignored")
            return
        if not isinstance(message, dict):
            return
        if message.get("method") == NOTIFICATION_METHOD:
            params = message.get("params") or {}
            try:
                self._on_push(str(params.get("subscription")), params.get("result"))
            except Exception:
                # A failing callback must not stop the pushes that follow.
                log.failure("a push callback failed")
            return
        request_id = message.get("id")
        if not isinstance(request_id, int):
            return
        with self._lock:
            future = self._waiting.get(request_id)
        if future is not None and not future.done():
            future.set_result(message)

    def close(self) -> None:
        """Close the socket (on_close is not called)."""
        self._closing = True
        self._ws.close()
        self._reader.join(5)
