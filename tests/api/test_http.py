"""POST /rpc over real loopback HTTP, and the token file."""

from __future__ import annotations

import json
import os
import stat
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from perund.api.amounts import Currencies
from perund.api.connections import ApiLimits
from perund.api.http import DISCARD_LIMIT, ensure_token
from perund.api.site import make_site
from perund.errors import InvalidConfig
from perund.metrics import Metrics, Sample
from tests.api.helpers import USDC, RawClient
from tests.api.memfacade import MemoryNode

pytestmark = pytest.mark.filterwarnings("ignore:Using readBody:DeprecationWarning")

TOKEN = "t0ken-for-the-api-tests-only-0123456789"
MAX_BODY = 64 * 1024


class Server:
    def __init__(self, port: Any, node: MemoryNode) -> None:
        self.port = port
        self.node = node
        self.url = f"http://127.0.0.1:{port.getHost().port}".encode()
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=self.pool)

    async def post(self, body: bytes, token: str | None = TOKEN, path: bytes = b"/rpc",
                   method: bytes = b"POST", content_type: bytes = b"application/json",
                   headers: dict[bytes, list[bytes]] | None = None) -> tuple[int, Headers, bytes]:
        raw: dict[bytes, list[bytes]] = {b"content-type": [content_type], **(headers or {})}
        raw = {name: values for name, values in raw.items() if values}  # [] removes one
        if token is not None:
            raw[b"authorization"] = [b"Bearer " + token.encode()]
        producer = FileBodyProducer(BytesIO(body)) if body else None
        response = await self.agent.request(method, self.url + path, Headers(raw), producer)
        content = await readBody(response)
        return response.code, response.headers, content

    async def rpc(self, method: str, params: Any = None) -> Any:
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
        if params is not None:
            request["params"] = params
        code, _, body = await self.post(json.dumps(request).encode())
        assert code == 200
        return json.loads(body)


async def _server() -> Server:
    node = MemoryNode(reactor)
    metrics = Metrics()
    site = make_site(node, TOKEN, reactor=reactor, currencies=Currencies([USDC]),
                     limits=ApiLimits(max_body=MAX_BODY), metrics=metrics,
                     render_metrics=lambda: metrics.render([Sample("perund_sessions", {}, 1)]))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    return Server(port, node)


async def _stop(server: Server) -> None:
    await server.pool.closeCachedConnections()
    await server.port.stopListening()


def api_test(test: Any) -> Any:
    """Run `test(server)` against a fresh server on 127.0.0.1:0."""
    @pytest_twisted.ensureDeferred
    async def run() -> None:
        server = await _server()
        try:
            await test(server)
        finally:
            await _stop(server)

    run.__name__ = test.__name__
    return run


@api_test
async def test_a_call_with_the_right_token(server: Server) -> None:
    reply = await server.rpc("session_open", {"configFile": "alice.yaml"})
    assert len(reply["result"]["sessionId"]) == 34
    code, headers, body = await server.post(b'{"jsonrpc":"2.0","method":"node_time","id":7}')
    assert code == 200 and headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert json.loads(body)["id"] == 7


@api_test
async def test_missing_or_wrong_tokens_are_401_and_nothing_runs(server: Server) -> None:
    body = b'{"jsonrpc":"2.0","method":"session_open","params":["alice.yaml"],"id":1}'
    for token, extra in ((None, {}), ("wrong-token-of-the-same-kind-0123456", {}),
                         (TOKEN[:-1], {}), ("", {}),
                         (None, {b"authorization": [b"Basic " + TOKEN.encode()]}),
                         (None, {b"authorization": [b"Bearer " + TOKEN.encode(),
                                                    b"Bearer " + TOKEN.encode()]})):
        code, headers, answer = await server.post(body, token=token, headers=extra)
        assert code == 401
        assert headers.getRawHeaders(b"www-authenticate") == [b'Bearer realm="perund"']
        assert json.loads(answer) == {"error": "a valid bearer token is required"}
    # other paths and methods too: nothing is revealed without the token
    assert (await server.post(b"", token=None, method=b"GET"))[0] == 401
    assert (await server.post(b"", token=None, path=b"/other"))[0] == 401
    assert server.node.calls == []
    # and the node keeps serving
    assert "result" in await server.rpc("node_time")


@api_test
async def test_bodies_over_the_limit_are_413(server: Server) -> None:
    big = b'{"jsonrpc":"2.0","method":"node_time","id":1,"params":{"x":"' + \
        b"a" * MAX_BODY + b'"}}'
    code, _, answer = await server.post(big)
    assert code == 413 and json.loads(answer)["error"]["code"] == -32600
    assert "a body of at most" in json.loads(answer)["error"]["data"]["requirement"]
    assert server.node.calls == []
    assert "result" in await server.rpc("node_time")


@api_test
async def test_a_declared_body_over_the_limit_is_413_before_it_is_sent(server: Server) -> None:
    """A client that waits to be told before it sends (Expect: 100-continue) is answered at
    once, not after the request timeout."""
    for length in (MAX_BODY + 1, 99_999_999_999):
        head = (b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + TOKEN.encode() + b"\r\nExpect: 100-continue\r\n"
                b"Content-Length: " + str(length).encode() + b"\r\n\r\n")
        answer = await _raw_exchange(server, head)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:40]
        assert b"a body of at most" in answer and answer.count(b"HTTP/1.1") == 1
    assert server.node.calls == []
    assert "result" in await server.rpc("node_time")


@api_test
async def test_without_a_token_a_declared_body_over_the_limit_is_401_before_it_is_sent(
        server: Server) -> None:
    """401 before any other answer, on every path (docs/security.md): also for a client that
    declares too large a body and waits to be told (found by an audit: it got 413)."""
    for auth in (b"", b"Authorization: Bearer made-up-token-0123456789\r\n"):
        for length in (MAX_BODY + 1, 20):  # a small body is not invited either
            head = (b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + auth + b"Expect: 100-continue\r\nContent-Length: "
                    + str(length).encode() + b"\r\n\r\n")
            answer = await _raw_exchange(server, head)
            assert answer.startswith(b"HTTP/1.1 401 "), answer[:40]  # no "100 Continue"
            assert b"www-authenticate: bearer" in answer.lower()
            assert answer.count(b"HTTP/1.1") == 1
    assert server.node.calls == []


@api_test
async def test_chunked_bodies_over_the_limit_are_413(server: Server) -> None:
    chunk = b"a" * 8192
    chunks = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n"
                      for _ in range(MAX_BODY // len(chunk) + 2)) + b"0\r\n\r\n"
    head = (b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    answer = await _raw_exchange(server, head + chunks)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert server.node.calls == []


@api_test
async def test_an_endless_refused_body_is_cut_off(server: Server) -> None:
    head = (b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n")
    protocol = _Flooder(head, DISCARD_LIMIT + MAX_BODY)
    await TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port).connect(
        _factory(protocol))
    await protocol.lost
    assert not protocol.gave_up  # the server hung up first, long before the 1 GB
    assert protocol.sent <= DISCARD_LIMIT + 8 * 1024 * 1024
    assert server.node.calls == []


@api_test
async def test_method_content_type_and_notifications(server: Server) -> None:
    code, headers, body = await server.post(b"", method=b"GET")
    assert code == 405 and headers.getRawHeaders(b"allow") == [b"POST"]
    assert json.loads(body)["error"]["data"]["method"] == "POST"
    # What curl -d sends: a JSON-RPC error naming the header (not a bare 415 page).
    for wrong in (b"text/plain", b"application/x-www-form-urlencoded"):
        code, _, body = await server.post(b'{"jsonrpc":"2.0","method":"node_time","id":1}',
                                          content_type=wrong)
        error = json.loads(body)["error"]
        assert code == 415 and error["code"] == -32600 and error["data"]["header"] == \
            "Content-Type"
    assert server.node.calls == []
    # No Content-Type at all is taken as JSON.
    code, _, body = await server.post(b'{"jsonrpc":"2.0","method":"node_time","id":1}',
                                      headers={b"content-type": []})
    assert code == 200 and "result" in json.loads(body)
    code, _, body = await server.post(b'{"jsonrpc":"2.0","method":"node_time","id":1}',
                                      content_type=b"application/json; charset=utf-8")
    assert code == 200
    code, _, body = await server.post(b'[{"jsonrpc":"2.0","method":"node_time"},'
                                      b'{"jsonrpc":"2.0","method":"node_time"}]')
    assert code == 204 and body == b""
    code, _, body = await server.post(b"{not json")
    assert code == 200 and json.loads(body)["error"]["code"] == -32700
    code, _, _ = await server.post(b'{"jsonrpc":"2.0","method":"node_time","id":1}',
                                   path=b"/elsewhere")
    assert code == 404


class _Flooder(Protocol):
    """Writes a body that never ends, a chunk per reactor turn, until the server hangs up."""

    def __init__(self, head: bytes, most: int) -> None:
        self.head = head
        self.most = most
        self.sent = 0
        self.lost: Deferred[None] = Deferred()
        self.open = True
        self.gave_up = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.head)
        self._more()

    def _more(self) -> None:
        if not self.open:
            return
        assert self.transport is not None
        if self.sent > 4 * self.most:
            self.gave_up = True
            self.transport.loseConnection()
            return
        self.transport.write(b"x" * 65536)
        self.sent += 65536
        reactor.callLater(0, self._more)

    def connectionLost(self, reason: Any = None) -> None:
        self.open = False
        self.lost.callback(None)


def _factory(protocol: Protocol) -> Any:
    from twisted.internet.protocol import Factory

    return Factory.forProtocol(lambda: protocol)


async def _raw_exchange(server: Server, payload: bytes) -> bytes:
    protocol = RawClient(payload)
    await TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port).connect(
        _factory(protocol))
    return await protocol.done


# -- the token file --------------------------------------------------------------------------------

def test_the_token_file_is_created_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "data" / "api.token"
    token = ensure_token(path)
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(path) == token
    assert path.read_text().strip() == token


def test_the_token_file_appears_whole_or_not_at_all(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that finds the file (the CLI, a test waiting for the node, a second node) reads
    the whole token: it is written beside the file and then linked to its name."""
    path = tmp_path / "api.token"
    real_write = os.write
    seen_while_writing: list[bool] = []

    def write(fd: int, data: bytes) -> int:
        seen_while_writing.append(path.exists())
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    token = ensure_token(path)
    monkeypatch.undo()
    assert seen_while_writing == [False]
    assert path.read_text() == token + "\n"
    assert os.listdir(tmp_path) == ["api.token"]  # nothing left beside it


def test_a_token_file_made_meanwhile_by_another_process_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "api.token"
    theirs = "t" * 43
    real_link = os.link

    def link(source: str, target: str) -> None:
        path.write_text(theirs + "\n")  # the other node got there first
        os.chmod(path, 0o600)
        real_link(source, target)

    monkeypatch.setattr(os, "link", link)
    assert ensure_token(path) == theirs
    monkeypatch.undo()
    assert path.read_text() == theirs + "\n" and os.listdir(tmp_path) == ["api.token"]


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "api.token"
    ensure_token(path)
    os.chmod(path, 0o644)
    with pytest.raises(InvalidConfig, match="chmod 600") as caught:
        ensure_token(path)
    assert caught.value.data["name"] == "api.token_file"
    token = path.read_text().strip()
    assert token not in str(caught.value.to_data()) + caught.value.message


@pytest.mark.parametrize("content", [
    b"abc\n",  # too short
    b"correct horse battery staple\n",  # a passphrase
    b"S3cret!pass@word#2026\n",  # a keystore's password file, given by mistake
    b"perund-dev-password\n",  # perund generate's password files: a token's letters, too short
    b'{"address": "2e021d83", "crypto": {"cipher": "aes-128-ctr"}, "version": 3}\n',
])
def test_what_is_not_a_token_is_refused_without_quoting_it(tmp_path: Path,
                                                           content: bytes) -> None:
    """An existing file becomes the operator's credential only if it has a token's form."""
    path = tmp_path / "token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(InvalidConfig, match="does not hold a token") as caught:
        ensure_token(path)
    said = caught.value.message + str(caught.value.to_data())
    assert content.strip().decode() not in said and "S3cret" not in said


def test_tokens_of_every_form_the_node_and_operators_make_are_taken(tmp_path: Path) -> None:
    for token in ("pdt_" + "ab" * 8 + "_" + "x" * 43, "Zm9vYmFyYmF6cXV4cXV1eGZvb2JhcmJhenF1eA==",
                  "0123456789abcdef0123456789abcdef", "A-b_C.d~E+f/G=h1234567890abcdefgh"):
        path = tmp_path / "token"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, token.encode() + b"\n")
        os.close(fd)
        assert ensure_token(path) == token


def test_non_files_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    with pytest.raises(InvalidConfig, match="not a regular file"):
        ensure_token(folder)


@api_test
async def test_metrics_behind_the_token(server: Server) -> None:
    await server.rpc("node_time")
    await server.rpc("no_such_method")
    code, _, _ = await server.post(b"", token=None, path=b"/metrics", method=b"GET")
    assert code == 401
    code, headers, body = await server.post(b"", path=b"/metrics", method=b"GET")
    assert code == 200
    assert headers.getRawHeaders(b"content-type") == [b"text/plain; version=0.0.4; charset=utf-8"]
    text = body.decode()
    assert 'perund_api_calls_total{method="node_time",outcome="ok"} 1' in text
    # A name the caller chose is not a label: the series cannot grow without bound.
    assert 'perund_api_calls_total{method="unknown",outcome="-32601"} 1' in text
    assert "# TYPE perund_sessions gauge\nperund_sessions 1\n" in text
    assert (await server.post(b"x", path=b"/metrics", method=b"POST"))[0] == 405


def test_request_bodies_are_never_parsed_as_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    from twisted.web import http
    from twisted.web.test.requesthelper import DummyChannel

    from perund.api.http import ApiRequest

    parsed: list[bytes] = []
    monkeypatch.setattr(http, "_parseContentType", lambda line: parsed.append(line) or b"")
    request = ApiRequest(DummyChannel())
    request.process = lambda: None  # type: ignore[method-assign]
    request.content = BytesIO()
    request.content.write(b"a=1&b=2")  # as an authorised client's body arrives
    request.requestHeaders.setRawHeaders(b"content-type",
                                         [b"application/x-www-form-urlencoded"])
    request.requestReceived(b"POST", b"/rpc", b"HTTP/1.1")
    assert parsed == [] and request.args == {}
