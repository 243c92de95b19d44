"""A JSON-RPC 2.0 dispatcher: JSON in, JSON out, no transport.

It implements the whole of https://www.jsonrpc.org/specification: single requests, batches
(answered concurrently, replies in request order), notifications (never answered, even when they
fail), parse errors and invalid requests (`id` null when it cannot be read), params by name or
by position, and the error codes -32700, -32600, -32601, -32602 and -32603. Application errors
are `PerundError`s, mapped through the one table of `perund.errors`: their code, message and
`data = err.to_data()`. Anything else a method raises is a bug: the client gets 401 Internal
with no details, the log gets the traceback.

Each call is logged once: method, session (when the params name one), outcome and duration;
never the params, which may hold paths or amounts a user considers private.
"""

from __future__ import annotations

import json
import math
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import accumulate
from typing import Any, Final

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from perund.api.credentials import (
    Credential,
    CredentialRegistry,
    Scope,
    authorize_method,
    authorize_session,
    party_of,
)
from perund.api.fair import READ_BYTES_PER_CALL, TURN_JOBS, FairScheduler
from perund.api.method_spec import CallContext, Method
from perund.api.openrpc import params_schema
from perund.api.schema import InvalidParams, Schema, check_schema, validate
from perund.errors import FailedPrecondition, Internal, PerundError
from perund.metrics import Metrics
from perund.ratelimit import Allowances, RateLimitedWarning

log = Logger(namespace="perund.api")

QUIET_METHODS: Final = frozenset({
    "channel_send", "channel_get", "channel_list", "channel_listRetired", "payment_list",
    "payment_get", "node_time", "node_getConfig", "session_list", "session_balance",
    "session_getPeer", "session_listPeers", "subscribe", "unsubscribe", "rpc.discover"})
"""Methods whose successful calls write no log line unless slow: payments and reads come by
the thousand (payments are in the history, every call in the metrics). Failures, slow calls
and every call that opens, closes, answers or changes credentials and contacts are logged."""

SLOW_CALL_SECONDS: Final = 1.0

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

_MESSAGES = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    INTERNAL_ERROR: "Internal error",
}
_MEMBERS = frozenset({"jsonrpc", "method", "params", "id"})

Reply = dict[str, Any]
"""One JSON-RPC response object."""


def error_reply(request_id: object, code: int, message: str | None = None,
                data: Mapping[str, Any] | None = None) -> Reply:
    """A JSON-RPC error response."""
    error: dict[str, Any] = {"code": code, "message": message or _MESSAGES[code]}
    if data is not None:
        error["data"] = dict(data)
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A duplicated member is ambiguous (parsers disagree on which one wins): refuse it. The
    # dict is built at C speed; the pairs are gone through in Python only when it came out
    # shorter, to name the duplicate (checking each member in Python made an object of 90,000
    # members hold the reactor 40 ms).
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate member {key!r}")
            seen.add(key)
    return result


LARGE_BODY = 64 * 1024
"""A request body past this size counts against its session's allowance of large bodies (a
batch of 100 single payments is about 25 KiB: everyday clients never reach it)."""
LARGE_BODY_RATE = 1 << 20
"""Bytes of large bodies a session may send a second (after a burst of LARGE_BODY_BURST)."""
LARGE_BODY_BURST = 4 << 20

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a request may have."""

MAX_JSON_CONTAINERS = 10_000
"""Arrays and objects a request may hold in all: a batch of 100 calls of the largest kind
(`channel_send` with 16 payments) holds about 4,000. Parsing 300,000 empty arrays (a 1 MiB
body) took the reactor 0.08 s, which any credential could ask for again and again."""


_ESCAPE: Final = re.compile(rb"\\.", re.DOTALL)
_STRING: Final = re.compile(rb'"[^"]*"')
_STEPS: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_A_BRACKET: Final = bytes(sorted(set(range(256)) - set(b"[]{}")))


def _check_shape(body: bytes) -> None:
    """ValueError for nesting deeper than MAX_JSON_DEPTH, or more than MAX_JSON_CONTAINERS
    arrays and objects (before the parser builds them), found without recursing: the C
    parser recurses per level and a deep enough body overflows the stack (a crash, not an
    exception), so this runs before it whenever the body has enough brackets to matter.

    At C speed throughout (a byte-by-byte loop in Python took 0.3 s of the reactor for a
    1 MiB body of brackets): escapes go first, so that what is left of each string lies
    between two quotes; then the strings; then every byte but the brackets, which become
    +1 and -1, whose running sum is the depth."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return
    brackets = _STRING.sub(b"", _ESCAPE.sub(b"", body)).translate(_STEPS, _NOT_A_BRACKET)
    if brackets.count(1) > MAX_JSON_CONTAINERS:
        raise ValueError(f"more than {MAX_JSON_CONTAINERS} arrays and objects")
    if max(accumulate(array("b", brackets)), default=0) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")


def decode_json(body: bytes) -> object:
    """Parse a request body strictly: UTF-8, no NaN/Infinity, no duplicate members, finite
    numbers, at most MAX_JSON_DEPTH levels and MAX_JSON_CONTAINERS arrays and objects, no
    lone UTF-16 surrogates; ValueError otherwise."""
    _check_shape(body)
    try:
        message = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant,
                             parse_float=_finite_float, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    # `"\ud800"` is valid JSON but not text: it could not be logged, stored or sent back as
    # UTF-8. Only an escape can make one, so bodies without `\u` skip the walk.
    if b"\\u" in body and _has_lone_surrogate(message):
        raise ValueError("a string holds a lone UTF-16 surrogate")
    return message


def _parse_problem(exc: ValueError) -> str | None:
    """What is wrong with a body beyond JSON syntax (which `Parse error` says, as in the
    specification's examples), in words that quote none of it."""
    if isinstance(exc, UnicodeDecodeError):
        return "the body must be UTF-8 text"
    if isinstance(exc, json.JSONDecodeError):
        return None
    return _printable(str(exc), 120)


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


def encode_json(value: object) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _printable(text: str, limit: int = 64) -> str:
    """A caller-chosen string made safe for one log line."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return cleaned + ("..." if len(text) > limit else "")


def _envelope(request: object) -> tuple[object, str | None]:
    """`(id to answer with, problem)`: problem is None for a valid request object."""
    if not isinstance(request, dict):
        return None, "a request is a JSON object"
    request_id = request.get("id")
    if request_id is not None and (isinstance(request_id, bool)
                                   or not isinstance(request_id, str | int | float)):
        return None, '"id" must be a string, a number or null'
    if request.get("jsonrpc") != "2.0":
        return request_id, '"jsonrpc" must be "2.0"'
    if not isinstance(request.get("method"), str):
        return request_id, '"method" must be a string'
    if "params" in request and not isinstance(request["params"], list | dict):
        return request_id, '"params" must be an array or an object'
    unknown = set(request) - _MEMBERS
    if unknown:
        return request_id, "unknown members: " + ", ".join(sorted(_printable(k) for k in unknown))
    return request_id, None


DEFAULT_CALLS_IN_FLIGHT: Final = 128
"""Calls of one party in progress at once (limits.api_calls_in_flight): a batch's 100 fit."""

CALL_LINES_PER_SECOND: Final = 20.0
"""Log lines of calls one party (a session, the operator, the unauthenticated) may write a
second, after a burst of CALL_LINES_BURST. Per party, not per credential: a session mints
credentials at will, and each would bring a fresh burst."""
CALL_LINES_BURST: Final = 200

LOG_ALLOWANCES_KEPT: Final = 1024
"""Parties whose log allowance is remembered; past that, those with a full one are forgotten."""

_SESSION_ID: Final = re.compile(r"0x[0-9a-fA-F]{32}")


class Dispatcher:
    """Answers JSON-RPC 2.0 messages by calling `methods`.

    `clock` only times calls for the log. `max_batch` bounds how many calls one batch may
    start at once. Every call is authorised against the credential of its `CallContext`
    (`Method.access`); `credentials`, when given, also refuses a credential revoked since the
    connection carrying it was authenticated. `max_in_flight` bounds the calls of one party
    (a session's credentials together, or the operator) that are in progress at once, over
    every connection; read-only credentials take at most half of it. A call of a batch counts
    from the moment the batch is read, so its calls waiting for their turn count too. A call
    beyond it is refused at once (204), so one user's flood neither grows the node's memory nor
    queues work (chain reads, say) ahead of the node's own and every other user's.

    The work is shared out fairly (`FairScheduler`): reading a message and starting each call
    of a batch are jobs of the caller's party (a session's full credentials, its read-only
    ones, the operator), started round-robin over the parties, at most `turn_jobs` per reactor
    turn.
    """

    def __init__(self, methods: Iterable[Method], clock: IReactorTime, *,
                 max_batch: int = 100, metrics: Metrics | None = None,
                 credentials: CredentialRegistry | None = None,
                 max_in_flight: int = DEFAULT_CALLS_IN_FLIGHT,
                 turn_jobs: int = TURN_JOBS) -> None:
        self._methods: dict[str, Method] = {}
        self._credentials = credentials
        self._metrics = metrics
        self._schemas: dict[str, Schema] = {}
        for method in methods:
            if method.name in self._methods:
                raise ValueError(f"method {method.name} defined twice")
            schema = params_schema(method)
            check_schema(schema, method.name)
            self._methods[method.name] = method
            self._schemas[method.name] = schema
        # Any: zope interfaces do not type-check as protocols without the mypy-zope plugin.
        self._clock: Any = clock
        self.max_batch = max_batch
        if max_in_flight < 2:
            raise ValueError("max_in_flight must be at least 2")
        self.max_in_flight = max_in_flight
        self.scheduler = FairScheduler(clock, turn_jobs)
        """Whose work starts next (docs/security.md, "Fairness")."""
        self._in_flight: dict[tuple[str, bool], int] = {}
        """Calls in progress per party (session ID or "operator"), and whether read-only."""
        self._over_in_flight = RateLimitedWarning(clock, log)
        self._log_allowances = Allowances(clock, CALL_LINES_PER_SECOND, CALL_LINES_BURST,
                                          LOG_ALLOWANCES_KEPT)
        """Call lines each party may still write (a flood of failing calls must not fill the
        disk every session's store needs); the calls are counted in the metrics anyway."""
        self._unlogged = RateLimitedWarning(clock, log)
        self._body_allowances = Allowances(clock, LARGE_BODY_RATE, LARGE_BODY_BURST,
                                           LOG_ALLOWANCES_KEPT)
        """Bytes of large request bodies each session may still send (`LARGE_BODY`)."""
        self._over_body_rate = RateLimitedWarning(clock, log)

    @property
    def clock(self) -> Any:
        """The reactor (or a test's Clock) the dispatcher times calls and turns with."""
        return self._clock

    @property
    def methods(self) -> list[Method]:
        """The methods served, in definition order."""
        return list(self._methods.values())

    async def dispatch_bytes(self, body: bytes, context: CallContext | None = None,
                             started: Callable[[], None] | None = None) -> bytes | None:
        """Answer a raw message; None when nothing is to be sent back (only notifications).

        The message is read in its party's turn (`FairScheduler`); `started`, if given, is
        called then (a transport reads no more from a client whose message waits)."""
        context = context or CallContext()

        def read() -> Deferred[bytes | None]:
            if started is not None:
                started()
            return Deferred.fromCoroutine(self._answer_bytes(body, context))

        return await self.scheduler.run(_queue_of(context.credential), read,
                                        1 + len(body) // READ_BYTES_PER_CALL)

    async def _answer_bytes(self, body: bytes, context: CallContext) -> bytes | None:
        over = self._over_body_allowance(body, context)
        if over is not None:
            return encode_json(error_reply(None, over.code, over.message, over.to_data()))
        try:
            message = decode_json(body)
        except ValueError as exc:
            self._log_call("-", None, self._clock.seconds(), PARSE_ERROR, context)
            problem = _parse_problem(exc)
            return encode_json(error_reply(None, PARSE_ERROR, data=None if problem is None
                                           else {"requirement": problem}))
        reply = await self.dispatch(message, context)
        return None if reply is None else encode_json(reply)

    def _over_body_allowance(self, body: bytes,
                             context: CallContext | None) -> FailedPrecondition | None:
        """The refusal of a large body its session has no allowance left for (it is not
        parsed), or None. Parsing a 1 MiB body costs the reactor up to ~40 ms, and a WebSocket
        client may send them without waiting: each session's large bodies are bounded to
        LARGE_BODY_RATE bytes a second (the operator's are not)."""
        credential = context.credential if context is not None else None
        if len(body) <= LARGE_BODY or credential is None or credential.session_id is None:
            return None
        allowance = self._body_allowances.of(party_of(credential))
        needed = min(len(body), allowance.burst)
        if allowance.available() < needed:
            wait = max(allowance.seconds_until(needed), 0.1)
            self._over_body_rate.warn(
                "api: refused {counted} over {rate} bytes a second per session; "
                "the latest of session 0x{session}", "large request", rate=LARGE_BODY_RATE,
                session=credential.session_id)
            return FailedPrecondition(
                f"this session sends requests over {LARGE_BODY // 1024} KiB faster than "
                f"{LARGE_BODY_RATE // (1 << 20)} MiB a second: try again in {wait:.1f} s",
                retryAfter=round(wait, 1))
        allowance.spend(len(body))
        return None

    async def dispatch(self, message: object,
                       context: CallContext | None = None) -> Reply | list[Reply] | None:
        """Answer a parsed message: a request object or a batch of them."""
        context = context or CallContext()
        if not isinstance(message, list):
            return await self._call(message, context)
        if not message:
            self._log_call("-", None, self._clock.seconds(), INVALID_REQUEST, context)
            return error_reply(None, INVALID_REQUEST,
                               data={"requirement": "a batch holds at least one request"})
        if len(message) > self.max_batch:
            self._log_call("-", None, self._clock.seconds(), INVALID_REQUEST, context)
            return error_reply(None, INVALID_REQUEST, data={
                "requirement": f"a batch holds at most {self.max_batch} requests"})
        calls = [self._queue_call(request, context) for request in message]
        replies: list[Reply | None] = await gatherResults(calls)
        answered = [reply for reply in replies if reply is not None]
        return answered or None

    def _queue_call(self, request: object, context: CallContext) -> Deferred[Reply | None]:
        """Start one call of a batch in its party's turn; its in-flight slot is taken now, so
        the calls waiting count against `max_in_flight` (one beyond it is answered at once)."""
        credential = context.credential
        held: list[tuple[str, bool]] = []
        if credential is not None:
            try:
                held = self._take_slot(credential)
            except FailedPrecondition as exc:
                request_id, _ = _envelope(request)
                name = request.get("method") if isinstance(request, dict) else None
                self._log_call(_printable(name) if isinstance(name, str) else "-", None,
                               self._clock.seconds(), exc.code, context)
                if isinstance(request, dict) and "id" not in request:
                    return succeed(None)
                return succeed(error_reply(request_id, exc.code, exc.message, exc.to_data()))

        def release(result: object) -> object:
            self._give_slot(held)
            return result

        answered = self.scheduler.run(
            _queue_of(credential),
            lambda: Deferred.fromCoroutine(self._call(request, context, counted=bool(held))))
        return answered.addBoth(release)

    async def _call(self, request: object, context: CallContext,
                    counted: bool = False) -> Reply | None:
        started = self._clock.seconds()
        request_id, problem = _envelope(request)
        if problem is not None or not isinstance(request, dict):
            self._log_call("-", None, started, INVALID_REQUEST, context)
            return error_reply(request_id, INVALID_REQUEST, data={"requirement": problem})
        notification = "id" not in request
        name: str = request["method"]
        method = self._methods.get(name)
        if method is None:
            self._log_call(_printable(name), None, started, METHOD_NOT_FOUND, context)
            if notification:
                return None
            return error_reply(request_id, METHOD_NOT_FOUND, data={"method": _printable(name)})
        reply, code, session = await self._run(method, request.get("params"), request_id,
                                               context, counted)
        self._log_call(name, session, started, code, context)
        return None if notification else reply

    async def _run(self, method: Method, params: object, request_id: object,
                   context: CallContext,
                   counted: bool = False) -> tuple[Reply, int | None, str | None]:
        """Call `method`; the reply, its error code (None: success) and the session named.
        `counted`: its in-flight slot is taken already (`_queue_call`)."""
        named = params.get("sessionId") if isinstance(params, dict) else None
        # Named even when the params fail their check (the log says whose call it was); only
        # in a session ID's own form, so a caller cannot write other text into the log.
        session = named if isinstance(named, str) and _SESSION_ID.fullmatch(named) else None
        credential = context.credential
        try:
            if credential is not None and self._credentials is not None \
                    and not self._credentials.is_live(credential):
                credential = None  # revoked while this connection was open
            # Before the params are read: a caller that may never call this learns nothing.
            authorize_method(method.access, credential, method.name)
            assert credential is not None
            args = self._bind(method, params)
            named = args.get("sessionId")
            session = named if isinstance(named, str) else None
            authorize_session(method.access, credential, args, method.name)
            if counted:
                value = await method.handler(args, context)
            else:
                with self._slot(credential):
                    value = await method.handler(args, context)
        except InvalidParams as exc:
            return error_reply(request_id, INVALID_PARAMS, data={
                "field": exc.field, "requirement": exc.requirement}), INVALID_PARAMS, session
        except PerundError as exc:
            if exc.code == Internal.code:
                log.failure("{method} failed", method=method.name)
                return _internal(request_id), Internal.code, session
            return error_reply(request_id, exc.code, exc.message, exc.to_data()), exc.code, \
                session
        except Exception:
            log.failure("{method} failed", method=method.name)
            return _internal(request_id), Internal.code, session
        try:
            result = method.render(value)
            encode_json(result)  # fail here, for this call only, rather than for the batch
        except Exception:
            log.failure("rendering the result of {method} failed", method=method.name)
            return error_reply(request_id, INTERNAL_ERROR), INTERNAL_ERROR, session
        return {"jsonrpc": "2.0", "id": request_id, "result": result}, None, session

    @contextmanager
    def _slot(self, credential: Credential) -> Iterator[None]:
        """Count one call of `credential`'s party in progress for as long as it runs;
        FailedPrecondition when its party (or the party's read-only credentials, for one of
        those) has none left."""
        held = self._take_slot(credential)
        try:
            yield
        finally:
            self._give_slot(held)

    def _take_slot(self, credential: Credential) -> list[tuple[str, bool]]:
        """Count one call of `credential`'s party (see `_slot`); the counters to give back."""
        party = party_of(credential)
        reading = credential.scope is Scope.READ
        keys = [(party, False), (party, True)] if reading else [(party, False)]
        limits = [self.max_in_flight, self.max_in_flight // 2]
        for key, limit in zip(keys, limits, strict=False):
            if self._in_flight.get(key, 0) >= limit:
                who = "the operator" if credential.session_id is None else "this session"
                whose = "'s read-only credentials" if key[1] else ""
                self._over_in_flight.warn(
                    "api: refused {counted} over limits.api_calls_in_flight; the latest "
                    "of {party}{whose}, {limit} in progress", "call", whose=whose, limit=limit,
                    party="the operator" if credential.session_id is None
                    else f"session 0x{credential.session_id}")
                raise FailedPrecondition(
                    f"{who}{whose} {'have' if key[1] else 'has'} {limit} API calls in progress "
                    "already, the most allowed (limits.api_calls_in_flight): wait for their "
                    "answers", limit=limit)
        for key in keys:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        return keys

    def _give_slot(self, keys: list[tuple[str, bool]]) -> None:
        for key in keys:
            left = self._in_flight[key] - 1
            if left:
                self._in_flight[key] = left
            else:
                del self._in_flight[key]

    def _bind(self, method: Method, params: object) -> dict[str, Any]:
        if params is None:
            args: dict[str, Any] = {}
        elif isinstance(params, list):
            names = [p.name for p in method.params]
            if len(params) > len(names):
                raise InvalidParams("params", f"at most {len(names)} positional params "
                                              f"({', '.join(names) or 'none'})")
            args = dict(zip(names, params, strict=False))
        else:
            assert isinstance(params, dict)
            args = params
        validate(args, self._schemas[method.name], "")
        return args

    def _log_call(self, method: str, session: str | None, started: float, code: int | None,
                  context: CallContext | None) -> None:
        seconds = self._clock.seconds() - started
        duration_ms = round(seconds * 1000.0, 3)
        metrics = self._metrics
        if metrics is not None:
            # Only names the API knows become labels: callers cannot grow the series.
            name = method if method in self._methods else "unknown"
            metrics.inc("perund_api_calls_total", method=name,
                        outcome="ok" if code is None else str(code))
            metrics.inc("perund_api_call_seconds_total", seconds, method=name)
        if code is None and method in QUIET_METHODS and seconds < SLOW_CALL_SECONDS:
            return  # counted above; a line per payment or poll would be the log's bulk
        caller = _credential_name(context)
        allowance = self._log_allowances.of(
            party_of(context.credential if context is not None else None))
        if allowance.available() < 1:
            self._unlogged.warn("api: {counted} not logged, over {rate} lines a second for "
                                "their session (the metrics count every call)", "call",
                                rate=CALL_LINES_PER_SECOND)
            return
        allowance.spend(1)
        log.info("api call {method} session={session_id} credential={credential} "
                 "transport={transport} outcome={outcome} in {duration_ms} ms", method=method,
                 session_id=session or "-", credential=caller,
                 transport=context.transport if context else "-",
                 outcome="ok" if code is None else f"error {code}", code=code,
                 duration_ms=duration_ms)


def _credential_name(context: CallContext | None) -> str:
    """Who called, for the log: `operator`, or the scope and ID of a session credential (the
    ID names a credential without proving it; the secret is never known here)."""
    credential = context.credential if context is not None else None
    if credential is None:
        return "-"
    if credential.session_id is None:
        return credential.scope.value
    return f"{credential.scope.value}:{credential.id[:8]}"


def _queue_of(credential: Credential | None) -> tuple[str, bool]:
    """Whose turn a job takes (`FairScheduler`): a session's read-only credentials have a
    queue of their own, so a dashboard's flood delays its session's user no more than another
    session's would."""
    return party_of(credential), credential is not None and credential.scope is Scope.READ


def _internal(request_id: object) -> Reply:
    # Details stay in the log: a traceback or an exception text can reveal paths and state.
    return error_reply(request_id, Internal.code, "internal error",
                       {"category": Internal.category})
