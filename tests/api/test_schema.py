"""The params validator, and the OpenRPC document it shares its schemas with."""

from __future__ import annotations

from typing import Any

import pytest

from perund.api.methods import DISCOVER_BURST
from perund.api.openrpc import params_schema
from perund.api.schema import (
    CHANNEL_ID,
    InvalidParams,
    check_schema,
    nullable,
    obj,
    validate,
)
from tests.api.helpers import Api

SCHEMA = obj({
    "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8, "minLength": 2},
    "count": {"type": "integer", "minimum": 1, "maximum": 10},
    "ratio": {"type": "number"},
    "flag": {"type": "boolean"},
    "kind": {"type": "string", "enum": ["a", "b"]},
    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
    "inner": obj({"id": CHANNEL_ID}, ["id"]),
    "map": {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 1},
    "maybe": nullable({"type": "integer"}),
}, ["name"])


def refused(value: Any) -> InvalidParams:
    with pytest.raises(InvalidParams) as caught:
        validate(value, SCHEMA)
    return caught.value


def test_a_valid_value_passes() -> None:
    validate({"name": "abc", "count": 3, "ratio": 0.5, "flag": True, "kind": "a",
              "tags": ["x"], "inner": {"id": "0x" + "00" * 32}, "map": {"k": 1},
              "maybe": None}, SCHEMA)


@pytest.mark.parametrize(("value", "field", "says"), [
    ({}, "name", "is required"),
    ({"name": 5}, "name", "must be a string"),
    ({"name": "ABC"}, "name", "matching"),
    ({"name": "abcdefghi"}, "name", "at most 8 characters"),
    ({"name": "a"}, "name", "at least 2 characters"),
    ({"name": "abc\n"}, "name", "matching"),
    ({"name": "abc", "count": True}, "count", "must be an integer"),
    ({"name": "abc", "count": 1.5}, "count", "must be an integer"),
    ({"name": "abc", "count": 0}, "count", "at least 1"),
    ({"name": "abc", "count": 11}, "count", "at most 10"),
    ({"name": "abc", "ratio": False}, "ratio", "must be a number"),
    ({"name": "abc", "flag": 1}, "flag", "must be a boolean"),
    ({"name": "abc", "kind": "c"}, "kind", "one of"),
    ({"name": "abc", "tags": []}, "tags", "at least 1 items"),
    ({"name": "abc", "tags": ["a", "b", "c"]}, "tags", "at most 2 items"),
    ({"name": "abc", "tags": ["a", 1]}, "tags[1]", "must be a string"),
    ({"name": "abc", "inner": {}}, "inner.id", "is required"),
    ({"name": "abc", "inner": {"id": "0x00"}}, "inner.id", "32 bytes"),
    ({"name": "abc", "inner": {"id": "0x" + "00" * 32, "x": 1}}, "inner.x", "not allowed"),
    ({"name": "abc", "map": {}}, "map", "at least 1 members"),
    ({"name": "abc", "map": {"k": "v"}}, "map.k", "must be an integer"),
    ({"name": "abc", "maybe": "1"}, "maybe", "an integer or null"),
    ({"name": "abc", "other": 1}, "other", "not allowed"),
    ([], "", "must be an object"),
])
def test_each_keyword_refuses_and_names_the_field(value: Any, field: str, says: str) -> None:
    error = refused(value)
    assert error.field == field
    assert says in error.requirement


def test_enum_does_not_confuse_booleans_and_numbers() -> None:
    schema = {"enum": [1, "x"]}
    validate(1, schema)
    with pytest.raises(InvalidParams):
        validate(True, schema)


def test_unsupported_keywords_are_refused() -> None:
    with pytest.raises(ValueError, match="oneOf"):
        check_schema(obj({"a": {"oneOf": [{"type": "string"}]}}))
    with pytest.raises(ValueError, match="format"):
        check_schema({"type": "array", "items": {"type": "string", "format": "uri"}})


def test_every_method_validates_params_with_only_supported_keywords() -> None:
    api = Api()
    for method in api.dispatcher.methods:
        check_schema(params_schema(method), method.name)
        check_schema(method.result, method.name + ".result")


def test_rpc_discover_describes_every_method_with_the_schemas_in_force() -> None:
    api = Api()
    document = api.call("rpc.discover")
    assert document["openrpc"].startswith("1.")
    described = {m["name"]: m for m in document["methods"]}
    served = {m.name: m for m in api.dispatcher.methods}
    assert set(described) == set(served)
    expected = {"node_getConfig", "node_time", "session_open", "session_list", "session_close",
                "session_addPeer", "session_getPeer", "session_listPeers", "session_balance",
                "channel_open", "channel_respondProposal", "channel_list", "channel_listRetired",
                "channel_get",
                "channel_send", "channel_respondUpdate", "channel_close", "subscribe",
                "unsubscribe", "rpc.discover", "session_createToken", "session_listTokens",
                "session_revokeToken", "session_rotateToken", "payment_list", "payment_get"}
    assert set(served) == expected
    for name, entry in described.items():
        method = served[name]
        assert [p["name"] for p in entry["params"]] == [p.name for p in method.params]
        for param, spec in zip(entry["params"], method.params, strict=True):
            assert param["schema"] == spec.schema and param["required"] == spec.required
        assert entry["result"]["schema"] == method.result
        assert {"code": -32602, "message": "Invalid params"} in entry["errors"]
    # The currency table shapes the schemas: unknown currencies are refused by the schema.
    send = described["channel_send"]["params"][2]["schema"]
    assert send["items"]["properties"]["currency"]["enum"] == ["ETH", "USDC"]


def test_rpc_discover_is_answered_a_few_times_a_second_per_party() -> None:
    """Some 60 KB to encode for a call of a few bytes: a read-only credential's batches of it
    held the reactor for seconds (the isolation review's finding)."""
    api = Api()
    for _ in range(DISCOVER_BURST):
        api.call("rpc.discover")
    error = api.error("rpc.discover")
    assert error["code"] == 204 and error["data"]["retryAfter"] > 0
    assert "does not change" in error["message"]
    api.clock.advance(1.0)
    api.call("rpc.discover")  # DISCOVER_RATE a second come back
