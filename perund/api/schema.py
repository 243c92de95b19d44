"""JSON Schemas of the API and the small validator that enforces them.

`rpc.discover` (perund/api/openrpc.py) publishes exactly the schemas the dispatcher validates
params against, so the document cannot drift from the behaviour. The validator implements the
subset of JSON Schema these schemas use (listed in `KEYWORDS`); `check_schema` refuses any other
keyword, so a schema cannot silently mean more than what is enforced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from perund.api.amounts import AMOUNT_PATTERN, MAX_AMOUNT_LENGTH

Schema = dict[str, Any]

KEYWORDS = frozenset({
    # enforced
    "type", "required", "properties", "additionalProperties", "pattern", "enum", "minimum",
    "maximum", "items", "minLength", "maxLength", "minItems", "maxItems", "minProperties",
    # annotations only
    "title", "description", "default", "examples",
})
"""Every keyword the validator knows; anything else in a schema is a programming error."""


class InvalidParams(Exception):
    """Params do not satisfy their schema (or a conversion): JSON-RPC -32602.

    `field` is the path of the offending value (`payments[0].amount`, `balances.ETH.self`),
    `requirement` what it must be.
    """

    def __init__(self, field: str, requirement: str) -> None:
        super().__init__(f"{field or 'params'}: {requirement}")
        self.field = field
        self.requirement = requirement


# -- building blocks ------------------------------------------------------------------------------

ALIAS_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"


def hex_bytes(size: int, description: str) -> Schema:
    """A 0x-hex string of exactly `size` bytes."""
    return {"type": "string", "pattern": f"^0x[0-9a-fA-F]{{{2 * size}}}$",
            "description": description}


SESSION_ID = hex_bytes(16, "a session ID (16 bytes, 0x-hex)")
CHANNEL_ID = hex_bytes(32, "a channel ID (32 bytes, 0x-hex)")
PROPOSAL_ID = hex_bytes(32, "a channel proposal ID (32 bytes, 0x-hex)")
UPDATE_ID = hex_bytes(32, "the ID of an update awaiting an answer (32 bytes, 0x-hex)")
SUBSCRIPTION_ID = hex_bytes(16, "a subscription ID (16 bytes, 0x-hex)")
TOKEN_ID = hex_bytes(16, "a session credential's ID (16 bytes, 0x-hex; not the credential)")
TOKEN: Schema = {"type": "string", "pattern": r"^pdt_[0-9a-f]{32}_[A-Za-z0-9_-]{43}$",
                 "description": "a session credential: send it as `Authorization: Bearer` "
                                "(shown once; the node keeps only its hash)"}
ADDRESS: Schema = {"type": "string", "pattern": ADDRESS_PATTERN,
                   "description": "an Ethereum address, 0x-hex (EIP-55 or one letter case)"}
ALIAS: Schema = {"type": "string", "pattern": ALIAS_PATTERN,
                 "description": "a contact's alias: 1-64 letters, digits, '_', '.', '-'"}
PEER: Schema = {"type": "string", "pattern": ALIAS_PATTERN,
                "description": "a peer: its alias or its 0x off-chain address"}
AMOUNT: Schema = {"type": "string", "pattern": AMOUNT_PATTERN, "maxLength": MAX_AMOUNT_LENGTH,
                  "description": "a decimal amount in the currency's unit, e.g. \"0.25\""}
BOOLEAN: Schema = {"type": "boolean"}
SECONDS: Schema = {"type": "number", "description": "unix time in seconds, on the node's clock"}


def obj(properties: Mapping[str, Schema], required: Iterable[str] = (), **extra: Any) -> Schema:
    """An object schema with exactly `properties` (no others)."""
    schema: Schema = {"type": "object", "properties": dict(properties),
                      "additionalProperties": False, **extra}
    names = list(required)
    if names:
        schema["required"] = names
    return schema


def nullable(schema: Schema) -> Schema:
    """`schema` or null."""
    kind = schema["type"]
    kinds = list(kind) if isinstance(kind, list) else [kind]
    return {**schema, "type": [*kinds, "null"]}


# -- the validator --------------------------------------------------------------------------------

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "object": (dict,), "array": (list,), "null": (type(None),),
}


def _is(value: object, kind: str) -> bool:
    # bool is an int in Python but never a number in JSON.
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[kind])


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _matches(pattern: str, value: str) -> bool:
    # JSON Schema patterns search (ECMA 262); there `$` ends the input, while Python's `$` also
    # matches before a final newline, so an anchored pattern must reach the very end.
    found = _regex(pattern).search(value)
    if found is None:
        return False
    return not (pattern.endswith("$") and not pattern.endswith("\\$")
                and found.end() != len(value))


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe_type(kind: str | list[str]) -> str:
    kinds = kind if isinstance(kind, list) else [kind]
    names = {"string": "a string", "integer": "an integer", "number": "a number",
             "boolean": "a boolean", "object": "an object", "array": "an array", "null": "null"}
    return " or ".join(names[k] for k in kinds)


def validate(value: object, schema: Mapping[str, Any], path: str = "") -> None:
    """Check `value` against `schema`; InvalidParams names the first offending field."""
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is(value, k) for k in kinds):
            raise InvalidParams(path, f"must be {_describe_type(kind)}")
    if "enum" in schema and not any(type(value) is type(option) and value == option
                                    for option in schema["enum"]):
        shown = ", ".join(repr(option) for option in schema["enum"])
        raise InvalidParams(path, f"must be one of {shown}")
    if isinstance(value, str):
        _validate_string(value, schema, path)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise InvalidParams(path, f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise InvalidParams(path, f"must be at most {schema['maximum']}")
    elif isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise InvalidParams(path, f"must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise InvalidParams(path, f"must have at most {schema['maxItems']} items")
        if "items" in schema:
            for index, item in enumerate(value):
                validate(item, schema["items"], f"{path}[{index}]")
    elif isinstance(value, dict):
        _validate_object(value, schema, path)


def _validate_string(value: str, schema: Mapping[str, Any], path: str) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise InvalidParams(path, f"must have at most {schema['maxLength']} characters")
    if "minLength" in schema and len(value) < schema["minLength"]:
        raise InvalidParams(path, f"must have at least {schema['minLength']} characters")
    if "pattern" in schema and not _matches(schema["pattern"], value):
        what = schema.get("description") or f"a string matching {schema['pattern']}"
        raise InvalidParams(path, f"must be {what}")


def _validate_object(value: dict[str, Any], schema: Mapping[str, Any], path: str) -> None:
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        raise InvalidParams(path, f"must have at least {schema['minProperties']} members")
    properties: Mapping[str, Any] = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in value:
            raise InvalidParams(_child(path, name), "is required")
    for name, sub in properties.items():
        if name in value:
            validate(value[name], sub, _child(path, name))
    extra = schema.get("additionalProperties", True)
    for name in value:
        if name in properties:
            continue
        if extra is False:
            allowed = ", ".join(properties) or "none"
            raise InvalidParams(_child(path, name), f"is not allowed here (allowed: {allowed})")
        if isinstance(extra, Mapping):
            validate(value[name], extra, _child(path, name))


def check_schema(schema: Mapping[str, Any], where: str = "") -> None:
    """Refuse a schema that uses a keyword the validator does not enforce (ValueError)."""
    unknown = set(schema) - KEYWORDS
    if unknown:
        raise ValueError(f"schema {where or '(root)'} uses unsupported keywords {sorted(unknown)}")
    for name, sub in schema.get("properties", {}).items():
        check_schema(sub, _child(where, name))
    if isinstance(schema.get("items"), Mapping):
        check_schema(schema["items"], f"{where}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        check_schema(schema["additionalProperties"], f"{where}.*")
