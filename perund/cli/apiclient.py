"""A small synchronous client of the node's API: JSON-RPC over HTTP, pushes over WebSocket.

For programs that drive a node from outside (the walkthrough, tests, scripts): blocking calls,
no reactor. Errors from the node raise `ApiError` carrying the JSON-RPC error object.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from websockets.sync.client import ClientConnection, connect


class ApiError(Exception):
    """The node answered with a JSON-RPC error."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        super().__init__(f"{method}: {error.get('message')} (code {error.get('code')})")
        self.code: int = int(error.get("code", 0))
        self.error = error


class ApiClient:
    """JSON-RPC 2.0 calls to `http://host:port/rpc` with a bearer token."""

    def __init__(self, port: int, token: str, host: str = "127.0.0.1",
                 timeout: float = 300.0) -> None:
        self.url = f"http://{host}:{port}/rpc"
        self.ws_url = f"ws://{host}:{port}/ws"
        self.token = token
        self.timeout = timeout
        self._ids = 0

    def request(self, method: str, **params: Any) -> dict[str, Any]:
        """The whole JSON-RPC response object."""
        self._ids += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._ids, "method": method,
                           "params": params}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:
            reply: dict[str, Any] = json.loads(answer.read())
        return reply

    def call(self, method: str, **params: Any) -> Any:
        """The result; ApiError for an error response."""
        reply = self.request(method, **params)
        if "error" in reply:
            raise ApiError(method, reply["error"])
        return reply["result"]

    def wait_until_up(self, timeout: float = 60.0,
                      alive: Callable[[], bool] = lambda: True) -> None:
        """Poll `node_time` until the node answers (or `alive()` turns false)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call("node_time")
                return
            except (OSError, urllib.error.URLError):
                if not alive() or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def pushes(self) -> Pushes:
        """A WebSocket connection for subscriptions."""
        return Pushes(f"{self.ws_url}?token={self.token}")


class Pushes:
    """A WebSocket client: JSON-RPC calls on the socket and the notifications pushed on it."""

    def __init__(self, url: str) -> None:
        self._exit = ExitStack()
        self.ws: ClientConnection = self._exit.enter_context(connect(url))
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
