"""Encode calls to a contract and decode its outputs, logs and revert data, driven by its ABI.

Values cross this module in the core's shapes: addresses as 20 raw bytes, `bytes32` as bytes,
integers as int, arrays and tuples as tuples. eth_abi does the byte work; this module only
selects the ABI entry and converts between those shapes and eth_abi's (checksum strings for
addresses). Pure: no I/O, safe on any thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.abi import is_encodable_type
from eth_hash.auto import keccak
from eth_utils.abi import collapse_if_tuple

from perund.channel.types import Params, State, VirtualParams, to_address

_BUILTIN_ERRORS: tuple[dict[str, Any], ...] = (
    {"type": "error", "name": "Error", "inputs": [{"name": "reason", "type": "string"}]},
    {"type": "error", "name": "Panic", "inputs": [{"name": "code", "type": "uint256"}]},
)


def _signature(entry: Mapping[str, Any]) -> str:
    types = ",".join(collapse_if_tuple(dict(item)) for item in entry.get("inputs", ()))
    return f"{entry['name']}({types})"


def _types(items: Sequence[Mapping[str, Any]]) -> list[str]:
    return [collapse_if_tuple(dict(item)) for item in items]


def _normalize(item: Mapping[str, Any], value: Any) -> Any:
    """eth_abi's decoded `value` of ABI component `item`, in the core's shapes."""
    kind: str = item["type"]
    if kind.endswith("]"):
        inner = dict(item, type=kind[: kind.rindex("[")])
        return tuple(_normalize(inner, element) for element in value)
    if kind == "tuple":
        return tuple(
            _normalize(component, element)
            for component, element in zip(item["components"], value, strict=True)
        )
    if kind == "address":
        return to_address(value)
    return value


def params_value(params: Params) -> tuple[Any, ...]:
    """`Params` as the ABI tuple (uint64, uint256, address[2], address[2])."""
    return (
        params.challenge_duration,
        params.nonce,
        list(params.participants),
        list(params.receivers),
    )


def state_value(state: State) -> tuple[Any, ...]:
    """`State` as the ABI tuple (bytes32, uint64, address[], uint256[][], bool); its `locked`
    sub-allocations travel as a separate argument (`locked_value`)."""
    return (
        state.channel_id,
        state.version,
        list(state.assets),
        [list(row) for row in state.balances],
        state.is_final,
    )


def locked_value(state: State) -> list[tuple[Any, ...]]:
    """`state.locked` as the ABI array SubAlloc[] = (bytes32, uint256[], uint8[2])[]."""
    return [(lock.channel_id, list(lock.balances), list(lock.index_map)) for lock in state.locked]


def virtual_params_value(params: VirtualParams) -> tuple[Any, ...]:
    """`VirtualParams` as the ABI tuple (uint64, uint256, address[2], bytes32[2])."""
    return (
        params.challenge_duration,
        params.nonce,
        list(params.participants),
        list(params.parents),
    )


@dataclass(frozen=True, slots=True)
class DecodedError:
    """A revert decoded from its data: the custom error's name and arguments."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.args:
            return self.name
        shown = ", ".join(f"{key}={_shown(value)}" for key, value in self.args.items())
        return f"{self.name}({shown})"


@dataclass(frozen=True, slots=True)
class DecodedLog:
    """A log decoded by its event ABI: the event name and its arguments by name."""

    name: str
    args: Mapping[str, Any]


def _shown(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return repr(value)


class ContractCodec:
    """The ABI of one contract, indexed for encoding calls and decoding what comes back."""

    def __init__(self, abi: Sequence[Mapping[str, Any]]) -> None:
        self._functions: dict[str, Mapping[str, Any]] = {}
        self._selectors: dict[str, bytes] = {}
        self._events: dict[bytes, Mapping[str, Any]] = {}
        self._event_topics: dict[str, bytes] = {}
        self._errors: dict[bytes, Mapping[str, Any]] = {}
        self.constructor: Mapping[str, Any] | None = None
        for entry in abi:
            kind = entry.get("type")
            if kind == "function":
                # Overloads would need a signature-keyed lookup; the Adjudicator has none.
                self._functions[entry["name"]] = entry
                self._selectors[entry["name"]] = keccak(_signature(entry).encode())[:4]
            elif kind == "event" and not entry.get("anonymous"):
                topic = keccak(_signature(entry).encode())
                self._events[topic] = entry
                self._event_topics[entry["name"]] = topic
            elif kind == "constructor":
                self.constructor = entry
        for entry in (*_BUILTIN_ERRORS, *(e for e in abi if e.get("type") == "error")):
            self._errors[keccak(_signature(entry).encode())[:4]] = entry

    @property
    def error_names(self) -> frozenset[str]:
        """Names of the custom errors the ABI declares (and Error, Panic)."""
        return frozenset(str(entry["name"]) for entry in self._errors.values())

    def event_topic(self, name: str) -> bytes:
        """topic0 of event `name`; KeyError when the ABI has no such event."""
        return self._event_topics[name]

    def encode_call(self, name: str, *args: Any) -> bytes:
        """Calldata for function `name` with `args` (core shapes; addresses as raw bytes)."""
        entry = self._functions[name]
        return self._selectors[name] + abi_encode(_types(entry["inputs"]), list(args))

    def encode_constructor(self, bytecode: bytes, *args: Any) -> bytes:
        """Creation code followed by the ABI-encoded constructor arguments."""
        if self.constructor is None or not self.constructor.get("inputs"):
            if args:
                raise ValueError("the constructor takes no arguments")
            return bytecode
        return bytecode + abi_encode(_types(self.constructor["inputs"]), list(args))

    def decode_output(self, name: str, data: bytes) -> tuple[Any, ...]:
        """The return values of function `name` from `eth_call` output `data`."""
        outputs = self._functions[name]["outputs"]
        values = abi_decode(_types(outputs), data)
        return tuple(_normalize(item, value) for item, value in zip(outputs, values, strict=True))

    def decode_error(self, data: bytes) -> DecodedError | None:
        """The error in revert `data`; None for empty or unknown data."""
        entry = self._errors.get(data[:4]) if len(data) >= 4 else None
        if entry is None:
            return None
        inputs = entry["inputs"]
        try:
            values = abi_decode(_types(inputs), data[4:])
        except Exception:  # eth_abi raises several unrelated types on malformed data
            return DecodedError(entry["name"], {})
        return DecodedError(
            entry["name"],
            {
                item["name"] or f"arg{i}": _normalize(item, value)
                for i, (item, value) in enumerate(zip(inputs, values, strict=True))
            },
        )

    def decode_log(self, topics: Sequence[bytes], data: bytes) -> DecodedLog | None:
        """The event in a log; None when topic0 is not one of this contract's events."""
        entry = self._events.get(topics[0]) if topics else None
        if entry is None:
            return None
        indexed = [item for item in entry["inputs"] if item.get("indexed")]
        plain = [item for item in entry["inputs"] if not item.get("indexed")]
        if len(topics) != 1 + len(indexed):
            return None
        args: dict[str, Any] = {}
        for item, topic in zip(indexed, topics[1:], strict=True):
            # Indexed static values are their ABI word; dynamic ones only a hash (kept raw).
            kind = collapse_if_tuple(dict(item))
            if is_encodable_type(kind) and _is_static(kind):
                args[item["name"]] = _normalize(item, abi_decode([kind], topic)[0])
            else:
                args[item["name"]] = topic
        values = abi_decode(_types(plain), data)
        for item, value in zip(plain, values, strict=True):
            args[item["name"]] = _normalize(item, value)
        ordered = {item["name"]: args[item["name"]] for item in entry["inputs"]}
        return DecodedLog(entry["name"], ordered)


def _is_static(kind: str) -> bool:
    return not (kind.endswith("[]") or kind in ("bytes", "string") or kind.startswith("("))
