"""`POST /rpc`: JSON-RPC over HTTP, behind a bearer token, and the token file itself.

Order of checks, each before any work of the next: the token (401, `WWW-Authenticate:
Bearer`, decided from the headers alone while the body is discarded unread), the body size (413,
enforced while it arrives, so at most `max_body` bytes are ever buffered), the method (405),
the content type (415); only then is the body parsed and dispatched. Every refusal has a small
JSON body `{"error": ...}`.
"""

from __future__ import annotations

import hmac
import secrets
import stat
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from perund.api.connections import ApiChannel, claim_connection
from perund.api.credentials import Credential, CredentialRegistry, Scope
from perund.api.dispatcher import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    Dispatcher,
    encode_json,
    error_reply,
)
from perund.api.method_spec import CallContext
from perund.errors import FailedPrecondition, InvalidConfig
from perund.new_files import create_whole
from perund.ratelimit import RateLimitedWarning
from perund.tokens import TOKEN_FORM_TEXT, is_token

log = Logger(namespace="perund.api.http")

MAX_BODY = 1024 * 1024
"""Largest request body accepted (1 MiB)."""

DISCARD_LIMIT = 16 * MAX_BODY
"""A refused request whose body goes on beyond this is cut off instead of read to its end."""


# -- the token -----------------------------------------------------------------------------------

def ensure_token(path: str | Path) -> str:
    """The API token in `path`, created (random, mode 0600) when the file does not exist.

    An existing file that its group or others may read or write is refused (InvalidConfig):
    the token is the node's only credential, and a file exposed once may already be copied,
    so the operator must fix the mode and should replace the token. A file that does not hold
    a token's form (`perund.tokens`: a password file, a keystore, given by mistake) is refused
    too, so that it never becomes the operator's credential.
    """
    file = Path(path)
    try:
        return _read_token(file)
    except FileNotFoundError:
        pass
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        # Whole or not at all: a reader (the CLI, a test, a second node racing this one)
        # never finds the file empty.
        create_whole(file, (token + "\n").encode("ascii"))
    except FileExistsError:
        return _read_token(file)  # another process created it meanwhile: use theirs
    except OSError as exc:
        raise InvalidConfig(f"cannot create the API token file {file}: {exc.strerror}",
                            name="api.token_file", value=str(file)) from None
    log.info("created the API token file {path}", path=str(file))
    return token


def _read_token(file: Path) -> str:
    try:
        info = file.stat()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InvalidConfig(f"cannot read the API token file {file}: {exc.strerror}",
                            name="api.token_file", value=str(file)) from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidConfig(f"the API token file {file} is not a regular file",
                            name="api.token_file", value=str(file))
    if info.st_mode & 0o077:
        raise InvalidConfig(
            f"the API token file {file} is accessible to other users (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); chmod 600 it and replace the token",
            name="api.token_file", value=str(file))
    try:
        token = file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfig(f"cannot read the API token file {file}: {exc}",
                            name="api.token_file", value=str(file)) from None
    if not is_token(token):
        raise InvalidConfig(f"the API token file {file} does not hold a token: a token is "
                            f"{TOKEN_FORM_TEXT}", name="api.token_file", value=str(file))
    return token


def party_of(credential: Credential) -> str:
    """Whose a connection carrying `credential` is: its session's, or the operator's."""
    return credential.session_id or "operator"


def token_matches(token: str, offered: bytes | str | None) -> bool:
    """Whether `offered` is `token`, compared in constant time."""
    if offered is None:
        return False
    if isinstance(offered, str):
        offered = offered.encode("utf-8", "replace")
    return hmac.compare_digest(token.encode("utf-8"), offered)


def bearer(header: bytes | None) -> bytes | None:
    """The credentials of an `Authorization: Bearer <token>` header value."""
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return credentials.strip()


# -- the request: verdicts before the body --------------------------------------------------------

def credential_of(credentials: CredentialRegistry | None, request: Any) -> Credential | None:
    """The credential a request's one `Authorization: Bearer` header proves, or None (no
    header, two of them, or a token the node does not know)."""
    header = request.requestHeaders.getRawHeaders(b"authorization")
    if credentials is None or header is None or len(header) != 1:
        return None
    return credentials.authenticate(bearer(header[0]))


class ApiRequest(Request):
    """A request that decides about the credential and the size as soon as the headers are in.

    Unauthorised or oversized bodies are discarded as they arrive (and cut off past
    `DISCARD_LIMIT`), so they cost no memory; the resource then answers 401 or 413.
    """

    authorized: bool = False
    credential: Credential | None = None
    too_large: bool = False
    _discard: bool = False
    _received: int = 0
    _answered: bool = False

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # A JSON-RPC body is never a form: no form parsing (it costs an email-header parse,
        # ~80 µs, per request, and multipart parsing is attack surface the API does not need).
        # Twisted sets this flag per instance in __init__: a class attribute has no effect.
        self._parsePOSTFormSubmission = False
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def gotLength(self, length: int | None) -> None:
        site = self.channel.site  # type: ignore[attr-defined]
        max_body: int = getattr(site, "max_body", MAX_BODY)
        self.credential = credential_of(getattr(site, "credentials", None), self)
        self.authorized = self.credential is not None
        if self.credential is not None:
            claim_connection(self, party_of(self.credential))
        self.too_large = length is not None and length > max_body
        self._discard = not self.authorized or self.too_large
        if self._discard:
            self.content = BytesIO()
        else:
            super().gotLength(length)  # type: ignore[no-untyped-call]
        expect = self.requestHeaders.getRawHeaders(b"expect") or []
        if (self.too_large or not self.authorized) \
                and any(e.strip().lower() == b"100-continue" for e in expect):
            self._refuse_before_body(max_body)

    def _refuse_before_body(self, max_body: int) -> None:
        """Refuse now, before the body, and close, a request without a valid token or whose
        declared body is too large, for a client that waits to be told before it sends
        (Expect: 100-continue): it is not invited to send a body only to be refused, and one
        too large would wait for the request timeout. 401 without a valid token (that comes
        before any other answer), else 413. One that sends its body at once is answered after it
        (read and dropped): a close while it still sends would cost it the answer."""
        transport: Any = self.channel.transport
        if transport is None:
            return
        if self.authorized:
            status = b"413 Payload Too Large"
            body = encode_json(error_reply(None, INVALID_REQUEST, data={
                "requirement": f"a body of at most {max_body} bytes (limits.api_body_size)"}))
            headers = b""
        else:
            refuse_unauthorized(self)  # logs it, rate-limited, as every 401
            status = b"401 Unauthorized"
            body = encode_json({"error": "a valid bearer token is required"})
            headers = b'www-authenticate: Bearer realm="perund"\r\n'
        self._answered = True
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the refusal
        transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                        + headers + b"content-length: " + str(len(body)).encode("ascii")
                        + b"\r\nconnection: close\r\n\r\n" + body)
        transport.loseConnection()

    def process(self) -> None:
        if not self._answered:  # else refused before its body, and the connection is closing
            super().process()  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if not self._discard:
            max_body: int = getattr(self.channel.site,  # type: ignore[attr-defined]
                                    "max_body", MAX_BODY)
            if self._received <= max_body:
                super().handleContentChunk(data)  # type: ignore[no-untyped-call]
                return
            self.too_large = True
            self._discard = True
            self.content = BytesIO()
        if self._received > DISCARD_LIMIT and self.channel.transport is not None:
            log.warn("cut off a refused request body beyond {limit} bytes", limit=DISCARD_LIMIT)
            self.channel.transport.abortConnection()


def _refuse(request: Any, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return encode_json({"error": message})


def _refuse_rpc(request: Any, code: int, requirement: str, **data: str) -> bytes:
    """An HTTP error status with a JSON-RPC error object as its body (id null: the request
    was not read), so a JSON-RPC client gets something it understands."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return encode_json(error_reply(None, INVALID_REQUEST,
                                   data={"requirement": requirement, **data}))


def refuse_unauthorized(request: Any) -> bytes:
    """401 with `WWW-Authenticate: Bearer` and a JSON body; logged (without any token), at
    most once per interval however many come."""
    peer = request.getClientAddress()
    warnings: RateLimitedWarning | None = getattr(getattr(request.channel, "site", None),
                                                  "refusals", None)
    if warnings is not None:
        warnings.warn("refused API requests without a valid token: {times} in the last "
                      "period, the latest from {peer}", peer=getattr(peer, "host", str(peer)))
    else:
        log.warn("refused an API request without a valid token from {peer}",
                 peer=getattr(peer, "host", str(peer)))
    request.setHeader(b"www-authenticate", b'Bearer realm="perund"')
    return _refuse(request, 401, "a valid bearer token is required")


class MetricsResource(Resource):
    """`GET /metrics`: the node's counters and gauges in the Prometheus text format."""

    isLeaf = True

    def __init__(self, render_metrics: Callable[[], str]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted leaves it untyped
        self._render_metrics = render_metrics

    def render(self, request: Any) -> bytes:
        if not getattr(request, "authorized", False):
            return refuse_unauthorized(request)
        credential: Credential | None = getattr(request, "credential", None)
        if credential is None or credential.scope is not Scope.OPERATOR:
            # Node-wide figures: the operator's, not a session user's.
            return _refuse(request, 403, "the metrics need the operator's token")
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET")
            return _refuse(request, 405, "use GET")
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return self._render_metrics().encode("utf-8")


class RpcResource(Resource):
    """`/rpc`: POST a JSON-RPC 2.0 request or batch."""

    isLeaf = True

    def __init__(self, dispatcher: Dispatcher, credentials: CredentialRegistry,
                 max_body: int = MAX_BODY) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted leaves it untyped
        self._dispatcher = dispatcher
        self._credentials = credentials
        self._max_body = max_body

    def _credential(self, request: Any) -> Credential | None:
        if isinstance(request, ApiRequest):
            return request.credential
        # Served by a plain Site (not make_site's): check the header here, still before the body.
        return credential_of(self._credentials, request)

    def render(self, request: Any) -> bytes | int:
        """Check the credential, size, method and content type, then dispatch the body."""
        credential = self._credential(request)
        if credential is None:
            return refuse_unauthorized(request)
        content: Any = request.content
        too_large = request.too_large if isinstance(request, ApiRequest) \
            else content is None or len(content.getvalue()) > self._max_body
        if too_large:
            return _refuse_rpc(request, 413, f"a body of at most {self._max_body} bytes "
                                             "(limits.api_body_size)")
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return _refuse_rpc(request, 405, "the POST method", method="POST")
        declared = request.getHeader(b"content-type")
        media = (declared or b"application/json").split(b";")[0].strip().lower()
        if media != b"application/json":
            # A missing type is taken as JSON; a wrong one (curl -d sends a form's) is named.
            return _refuse_rpc(request, 415, "Content-Type: application/json (curl: -H "
                                             "'Content-Type: application/json')",
                               header="Content-Type")
        body = content.read()
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))
        done = Deferred.fromCoroutine(
            self._dispatcher.dispatch_bytes(body, CallContext("http", credential=credential)))
        done.addCallbacks(lambda reply: self._reply(request, reply, finished, credential),
                          lambda failure: self._failed(request, failure, finished))
        return NOT_DONE_YET

    def _reply(self, request: Any, reply: bytes | None, finished: list[bool],
               credential: Credential) -> None:
        if finished:  # the client went away; nothing to send
            return
        channel = request.channel
        if reply is not None and isinstance(channel, ApiChannel) \
                and not channel.send_reply(party_of(credential), len(reply)):
            # Its session's clients hold limits.api_session_buffer of replies not taken
            # already (or this one is larger): the node does not hold this one too.
            limit = channel.buffers.limit if channel.buffers is not None else 0
            reply = encode_json(error_reply(None, FailedPrecondition.code, (
                f"this answer of {len(reply)} bytes does not fit in what the node holds for "
                f"this session's clients (limits.api_session_buffer, {limit} bytes). The calls "
                "of the request did run: look before repeating one that moves money "
                "(channel_get, payment_list). Read the answers waiting, ask for smaller "
                "pages or fewer calls a batch"),
                {**FailedPrecondition("").to_data(), "limit": limit, "size": len(reply)}))
            if not channel.send_reply(party_of(credential), len(reply)):
                channel.abort_connection()
                return
        if reply is None:
            request.setResponseCode(204)
        else:
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"content-length", str(len(reply)).encode("ascii"))
            request.write(reply)
        request.finish()

    def _failed(self, request: Any, failure: Failure, finished: list[bool]) -> None:
        # The dispatcher answers every error itself; reaching this is a bug in it. The client
        # still gets a JSON-RPC error object, not an HTML page or a bare 500.
        log.failure("the dispatcher failed", failure)
        if not finished:
            request.setHeader(b"content-type", b"application/json")
            request.write(encode_json(error_reply(None, INTERNAL_ERROR)))
            request.finish()

