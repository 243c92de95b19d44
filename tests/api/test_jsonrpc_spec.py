"""The JSON-RPC 2.0 specification's examples (jsonrpc.org/specification, "Examples"),
verbatim, against the dispatcher serving the example methods; then the edges the examples
leave out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from perund.api.dispatcher import Dispatcher
from perund.api.method_spec import CallContext, Method, Param
from perund.errors import Internal, ResourceNotFound, StoreError
from tests.api.helpers import AS_OPERATOR, now

NUMBER = {"type": "integer"}
called: list[str] = []


def _method(name: str, params: tuple[str, ...], body: Any, required: int | None = None) -> Method:
    count = len(params) if required is None else required

    async def handler(args: dict[str, Any], ctx: CallContext) -> Any:
        called.append(name)
        return body(args)

    return Method(name, name, tuple(Param(p, NUMBER, required=i < count)
                                    for i, p in enumerate(params)), {}, handler)


def _boom(args: dict[str, Any]) -> Any:
    raise RuntimeError("secret: /home/alice/.key is unreadable")


def _store(args: dict[str, Any]) -> Any:
    raise StoreError("cannot write /var/lib/perund/alice.db")


def _missing(args: dict[str, Any]) -> Any:
    raise ResourceNotFound("no such channel", type="channel", id="0x01")


METHODS = [
    _method("subtract", ("minuend", "subtrahend"), lambda a: a["minuend"] - a["subtrahend"]),
    _method("sum", ("a", "b", "c"), lambda a: sum(a.values()), required=0),
    _method("update", ("a", "b", "c", "d", "e"), lambda a: None, required=0),
    _method("notify_hello", ("a",), lambda a: None),
    _method("notify_sum", ("a", "b", "c"), lambda a: None, required=0),
    _method("get_data", (), lambda a: ["hello", 5]),
    _method("boom", (), _boom),
    _method("store", (), _store),
    _method("missing", (), _missing),
    Method("unrenderable", "", (), {}, lambda a, c: _value(object())),
]


async def _value(value: Any) -> Any:
    return value


@pytest.fixture
def rpc() -> Dispatcher:
    called.clear()
    return Dispatcher(METHODS, Clock())


def dispatch(rpc: Dispatcher, message: Any) -> Any:
    """The reply to a parsed message, called as the operator (the reactor turns it takes
    taken: `now`)."""
    return now(rpc.dispatch(message, AS_OPERATOR), rpc.clock)


def send(rpc: Dispatcher, text: str) -> Any:
    reply = now(rpc.dispatch_bytes(text.encode(), AS_OPERATOR), rpc.clock)
    return None if reply is None else json.loads(reply)


def test_positional_parameters(rpc: Dispatcher) -> None:
    assert send(rpc, '{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}') \
        == {"jsonrpc": "2.0", "result": 19, "id": 1}
    assert send(rpc, '{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}') \
        == {"jsonrpc": "2.0", "result": -19, "id": 2}


def test_named_parameters(rpc: Dispatcher) -> None:
    assert send(rpc, '{"jsonrpc": "2.0", "method": "subtract", '
                     '"params": {"subtrahend": 23, "minuend": 42}, "id": 3}') \
        == {"jsonrpc": "2.0", "result": 19, "id": 3}
    assert send(rpc, '{"jsonrpc": "2.0", "method": "subtract", '
                     '"params": {"minuend": 42, "subtrahend": 23}, "id": 4}') \
        == {"jsonrpc": "2.0", "result": 19, "id": 4}


def test_notifications_get_no_reply_but_run(rpc: Dispatcher) -> None:
    assert send(rpc, '{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}') is None
    assert send(rpc, '{"jsonrpc": "2.0", "method": "foobar"}') is None
    assert called == ["update"]


def test_non_existent_method(rpc: Dispatcher) -> None:
    reply = send(rpc, '{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')
    assert reply["id"] == "1"
    assert reply["error"]["code"] == -32601 and reply["error"]["message"] == "Method not found"


def test_invalid_json(rpc: Dispatcher) -> None:
    reply = send(rpc, '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
    assert reply == {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"},
                     "id": None}


def test_invalid_request_object(rpc: Dispatcher) -> None:
    reply = send(rpc, '{"jsonrpc": "2.0", "method": 1, "params": "bar"}')
    assert reply["id"] is None
    assert reply["error"]["code"] == -32600 and reply["error"]["message"] == "Invalid Request"


def test_batch_invalid_json(rpc: Dispatcher) -> None:
    reply = send(rpc, '[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},'
                      '{"jsonrpc": "2.0", "method"]')
    assert reply == {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"},
                     "id": None}
    assert called == []


def test_empty_array(rpc: Dispatcher) -> None:
    reply = send(rpc, "[]")
    assert isinstance(reply, dict)
    assert reply["id"] is None and reply["error"]["code"] == -32600


def test_invalid_batch_but_not_empty(rpc: Dispatcher) -> None:
    reply = send(rpc, "[1]")
    assert isinstance(reply, list) and len(reply) == 1
    assert reply[0]["id"] is None and reply[0]["error"]["code"] == -32600


def test_invalid_batch(rpc: Dispatcher) -> None:
    reply = send(rpc, "[1,2,3]")
    assert [(r["id"], r["error"]["code"]) for r in reply] == [(None, -32600)] * 3


def test_mixed_batch(rpc: Dispatcher) -> None:
    reply = send(rpc, """[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]""")
    assert reply[0] == {"jsonrpc": "2.0", "result": 7, "id": "1"}
    assert reply[1] == {"jsonrpc": "2.0", "result": 19, "id": "2"}
    assert reply[2]["id"] is None and reply[2]["error"]["code"] == -32600
    assert reply[3]["id"] == "5" and reply[3]["error"]["code"] == -32601
    assert reply[4] == {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"}
    assert len(reply) == 5
    assert sorted(called) == ["get_data", "notify_hello", "subtract", "sum"]


def test_batch_of_notifications_has_no_reply(rpc: Dispatcher) -> None:
    assert send(rpc, """[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]""") is None
    assert sorted(called) == ["notify_hello", "notify_sum"]


# -- beyond the examples ---------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"\xff\xfe{}",                        # not UTF-8
    b'{"jsonrpc": "2.0", "method": "sum", "params": [NaN], "id": 1}',
    b'{"jsonrpc": "2.0", "method": "sum", "params": [1e400], "id": 1}',
    b'{"jsonrpc": "2.0", "jsonrpc": "2.0", "method": "sum", "id": 1}',   # duplicate member
    b"[" * 100_000 + b"]" * 100_000,       # nested too deeply
    b'{"jsonrpc": "2.0", "method": "sum", "params": [' + b"9" * 5000 + b"], \"id\": 1}",
    b"",
])
def test_more_parse_errors(rpc: Dispatcher, body: bytes) -> None:
    reply = json.loads(now(rpc.dispatch_bytes(body, AS_OPERATOR)))
    assert reply["error"]["code"] == -32700 and reply["id"] is None
    assert called == []


@pytest.mark.parametrize(("request_", "reply_id", "says"), [
    ({"jsonrpc": "1.0", "method": "sum", "id": 7}, 7, '"jsonrpc"'),
    ({"method": "sum", "id": 7}, 7, '"jsonrpc"'),
    ({"jsonrpc": "2.0", "id": 7}, 7, '"method"'),
    ({"jsonrpc": "2.0", "method": "sum", "params": 3, "id": 7}, 7, '"params"'),
    ({"jsonrpc": "2.0", "method": "sum", "id": {"a": 1}}, None, '"id"'),
    ({"jsonrpc": "2.0", "method": "sum", "id": True}, None, '"id"'),
    ({"jsonrpc": "2.0", "method": "sum", "id": 7, "extra": 1}, 7, "unknown members"),
    ("sum", None, "JSON object"),
])
def test_invalid_requests_echo_a_readable_id(rpc: Dispatcher, request_: Any, reply_id: Any,
                                             says: str) -> None:
    reply = dispatch(rpc, request_)
    assert reply["id"] == reply_id
    assert reply["error"]["code"] == -32600 and says in reply["error"]["data"]["requirement"]
    assert called == []


def test_ids_of_every_allowed_kind_are_echoed(rpc: Dispatcher) -> None:
    for request_id in ("abc", 12, 1.5, None):
        reply = dispatch(rpc, {"jsonrpc": "2.0", "method": "get_data", "id": request_id})
        assert reply["id"] == request_id and reply["result"] == ["hello", 5]


def test_invalid_params_name_the_field(rpc: Dispatcher) -> None:
    reply = dispatch(rpc, {"jsonrpc": "2.0", "method": "subtract", "params": [1], "id": 1})
    assert reply["error"] == {"code": -32602, "message": "Invalid params",
                              "data": {"field": "subtrahend", "requirement": "is required"}}
    reply = dispatch(rpc, {"jsonrpc": "2.0", "method": "subtract", "params": [1, 2, 3],
                              "id": 1})
    assert reply["error"]["data"]["field"] == "params"
    reply = dispatch(rpc, {"jsonrpc": "2.0", "method": "subtract",
                              "params": {"minuend": 1, "subtrahend": "2"}, "id": 1})
    assert reply["error"]["data"] == {"field": "subtrahend", "requirement": "must be an integer"}
    reply = dispatch(rpc, {"jsonrpc": "2.0", "method": "get_data", "params": {"x": 1},
                              "id": 1})
    assert reply["error"]["data"]["field"] == "x"
    assert called == []


def test_params_may_be_omitted_empty_or_either_structure(rpc: Dispatcher) -> None:
    for params in ([], {}):
        reply = dispatch(rpc, {"jsonrpc": "2.0", "method": "get_data", "params": params,
                                  "id": 1})
        assert reply["result"] == ["hello", 5]


def test_application_errors_carry_code_message_and_data(rpc: Dispatcher) -> None:
    reply = dispatch(rpc, {"jsonrpc": "2.0", "method": "missing", "id": 1})
    assert reply["error"] == {"code": 201, "message": "no such channel",
                              "data": {"category": "client", "type": "channel", "id": "0x01"}}


@pytest.mark.parametrize("method", ["boom", "store"])
def test_bugs_are_401_without_details(rpc: Dispatcher, method: str) -> None:
    reply = dispatch(rpc, {"jsonrpc": "2.0", "method": method, "id": 1})
    assert reply["error"] == {"code": Internal.code, "message": "internal error",
                              "data": {"category": "internal"}}
    assert "secret" not in json.dumps(reply) and "/var/lib" not in json.dumps(reply)


def test_a_result_that_cannot_be_rendered_is_32603_for_that_call_only(rpc: Dispatcher) -> None:
    reply = dispatch(rpc, [{"jsonrpc": "2.0", "method": "unrenderable", "id": 1},
                              {"jsonrpc": "2.0", "method": "get_data", "id": 2}])
    assert reply[0]["error"] == {"code": -32603, "message": "Internal error"}
    assert reply[1]["result"] == ["hello", 5]


def test_failing_notifications_stay_silent(rpc: Dispatcher) -> None:
    assert dispatch(rpc, {"jsonrpc": "2.0", "method": "boom"}) is None
    assert dispatch(rpc, {"jsonrpc": "2.0", "method": "subtract", "params": [1]}) is None


def test_batches_are_bounded(rpc: Dispatcher) -> None:
    reply = dispatch(rpc, [{"jsonrpc": "2.0", "method": "get_data", "id": i}
                              for i in range(rpc.max_batch + 1)])
    assert reply["error"]["code"] == -32600 and reply["id"] is None
    assert called == []


def test_every_call_is_logged_once_without_params(rpc: Dispatcher) -> None:
    from twisted.logger import globalLogPublisher

    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        dispatch(rpc, [{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1},
                          {"jsonrpc": "2.0", "method": "missing", "id": 2},
                          {"jsonrpc": "2.0", "method": "nope\nfake log line", "id": 3}])
    finally:
        globalLogPublisher.removeObserver(seen.append)
    calls = [e for e in seen if e.get("log_namespace") == "perund.api"
             and "duration_ms" in e]
    assert [(e["method"], e["outcome"]) for e in calls] == [
        ("subtract", "ok"), ("missing", "error 201"), ("nope?fake log line", "error -32601")]
    assert all("42" not in repr(e.get("params")) for e in calls)


def test_a_flood_of_failing_calls_writes_a_bounded_log() -> None:
    """One credential's failing calls (a batch of a hundred, over and over) would otherwise
    write the log as fast as it can send them, filling the disk the stores need."""
    from twisted.logger import formatEvent, globalLogPublisher

    from perund.api.dispatcher import CALL_LINES_BURST, CALL_LINES_PER_SECOND

    clock = Clock()
    rpc = Dispatcher(METHODS, clock)
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        for _ in range(10):
            dispatch(rpc, [{"jsonrpc": "2.0", "method": "missing", "id": i} for i in range(100)])
        clock.advance(1)
        dispatch(rpc, [{"jsonrpc": "2.0", "method": "missing", "id": i} for i in range(100)])
    finally:
        globalLogPublisher.removeObserver(seen.append)
    lines = [e for e in seen if e.get("log_namespace") == "perund.api" and "duration_ms" in e]
    assert len(lines) == CALL_LINES_BURST + CALL_LINES_PER_SECOND
    summaries = [e for e in seen if "not logged, over" in e.get("log_format", "")]
    assert len(summaries) == 1 and summaries[0]["times"] == 1
    assert formatEvent(summaries[0]).startswith("api: 1 call not logged, over ")


def test_fresh_credentials_of_one_session_share_its_log_lines() -> None:
    """A session mints and revokes credentials at will: each new one brought a fresh burst of
    log lines (the resource review logged 1.5 MB/s so). The allowance is the session's."""
    from twisted.logger import globalLogPublisher

    from perund.api.credentials import Credential, Scope
    from perund.api.dispatcher import CALL_LINES_BURST

    rpc = Dispatcher(METHODS, Clock())
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        for i in range(10):
            minted = Credential(f"{i:08x}" + "0" * 24, Scope.READ, session_id="ab" * 16)
            now(rpc.dispatch([{"jsonrpc": "2.0", "method": "missing", "id": n}
                              for n in range(100)], CallContext("http", credential=minted)),
                rpc.clock)
        dispatch(rpc, {"jsonrpc": "2.0", "method": "missing", "id": 1})  # the operator's own
    finally:
        globalLogPublisher.removeObserver(seen.append)
    lines = [e for e in seen if e.get("log_namespace") == "perund.api" and "duration_ms" in e]
    assert len(lines) == CALL_LINES_BURST + 1


def test_nesting_is_limited_without_recursing() -> None:
    from perund.api.dispatcher import MAX_JSON_DEPTH, decode_json

    deep = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(ValueError, match="nested deeper"):
        decode_json(deep)
    assert decode_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
    brackets_in_a_string = b'{"a": "' + b"[" * 10_000 + b'"}'
    assert decode_json(brackets_in_a_string) == {"a": "[" * 10_000}
    # An escaped quote does not end a string: the levels after it still count.
    hidden = [[["\"", deep_value(MAX_JSON_DEPTH), "x"]]]
    with pytest.raises(ValueError, match="nested deeper"):
        decode_json(json.dumps(hidden).encode())
    escaped_backslash = ["\\", deep_value(MAX_JSON_DEPTH), "x"]
    with pytest.raises(ValueError, match="nested deeper"):
        decode_json(json.dumps(escaped_backslash).encode())
    # So is a body of more arrays and objects than any request needs, before it is parsed
    # (found by an audit: 300,000 of them held the reactor 0.08 s to parse).
    from perund.api.dispatcher import MAX_JSON_CONTAINERS

    with pytest.raises(ValueError, match=f"more than {MAX_JSON_CONTAINERS} arrays"):
        decode_json(b"[" + b"[]," * MAX_JSON_CONTAINERS + b"[]]")
    assert len(decode_json(b"[" + b"[],"  * (MAX_JSON_CONTAINERS - 2) + b"[]]")) == \
        MAX_JSON_CONTAINERS - 1
    assert decode_json(b'["' + b"[" * 20_000 + b'"]') == ["[" * 20_000]  # in a string: text
    # A body deep enough to overflow the C parser's stack is refused, not a crash.
    with pytest.raises(ValueError):
        decode_json(b"[" * 1_000_000 + b"]" * 1_000_000)


def deep_value(levels: int) -> object:
    value: object = []
    for _ in range(levels - 1):
        value = [value]
    return value


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


_tricky_text = st.text(alphabet='[]{}"\\/ab\n\u00e9', max_size=12)
_json_values = st.recursive(
    st.none() | st.integers() | _tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_tricky_text, inner, max_size=3),
    max_leaves=200)


@given(value=_json_values, wrap=st.integers(min_value=0, max_value=80))
def test_the_depth_check_agrees_with_the_parsed_depth(value: object, wrap: int) -> None:
    """Strings full of brackets, quotes and escapes never count, and every real level does:
    a body is refused exactly when its parsed value is nested deeper than the limit."""
    from perund.api.dispatcher import MAX_JSON_DEPTH, decode_json

    for _ in range(wrap):
        value = [value]
    body = json.dumps(value, ensure_ascii=False).encode()
    if _depth(value) > MAX_JSON_DEPTH:
        with pytest.raises(ValueError, match="nested deeper"):
            decode_json(body)
    else:
        assert decode_json(body) == value
