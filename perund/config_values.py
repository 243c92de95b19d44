"""Converters of single configuration values (durations, sizes, endpoints, addresses, folder
lists, origins): each returns the value as the node uses it, or raises ValueError saying what
was expected (perund/config.py names the key and collects the problems)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perund.channel.types import Address, to_address
from perund.safe_files import os_reason

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: object) -> float:
    """Seconds from a duration string such as `10s`, `500ms`, `2m`, `1h`, `1d`; ValueError
    otherwise."""
    if not isinstance(text, str):
        raise ValueError("a duration is a string such as '10s', '500ms' or '2m'")
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. '10s', '500ms', '2m')")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def check_listen(value: object, example: str) -> str:
    """`value` if it is a server endpoint string Twisted can parse (`example` shows one).

    For the operator's `api.listen` only: the operator may choose any endpoint kind (`ssl:`
    with a key file, `unix:`), and parsing one may read the files it names. Never for what a
    user writes: a session's `comm.listen` is parsed by `perund.listen_address`, which reads
    nothing (docs/security.md)."""
    from twisted.internet import endpoints

    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"an endpoint string such as {example}")
    try:
        # Parsing only: nothing listens yet, so no reactor is needed.
        parse: Any = endpoints.serverFromString  # untyped in Twisted
        endpoint = parse(None, value)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not an endpoint string ({exc}); e.g. {example}") from None
    except OSError as exc:  # an ssl: endpoint reads its certificate and key here
        raise ValueError(f"a file it names cannot be read ({os_reason(exc)})") from None
    except Exception as exc:  # a certificate OpenSSL cannot load; never quote its contents
        raise ValueError(f"not usable ({type(exc).__name__})") from None
    port = getattr(endpoint, "_port", None)  # TCP endpoints: Twisted does not range-check it
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ValueError(f"port {port} is not in 0..65535")
    return value


def non_empty_text(value: Any) -> str:
    """A string with something besides blanks in it."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    return value


def plain_text(value: Any) -> str:
    """Any string (an empty one too)."""
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def one_of(*options: str) -> Callable[[Any], str]:
    """A converter taking exactly one of `options`."""
    def convert(value: Any) -> str:
        if value not in options:
            raise ValueError("one of " + ", ".join(options))
        return str(value)

    return convert


def positive_duration(value: Any) -> float:
    """Seconds of a duration (`parse_duration`) above zero."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("a duration above zero")
    return seconds


def duration_at_least(minimum: float, shown: str) -> Callable[[Any], float]:
    """A converter taking a duration (`parse_duration`) of at least `minimum` seconds
    (`shown`)."""
    def convert(value: Any) -> float:
        seconds = parse_duration(value)
        if not seconds >= minimum:
            raise ValueError(f"a duration of at least {shown}")
        return seconds

    return convert


def int_at_least(minimum: int) -> Callable[[Any], int]:
    """A converter taking an integer (not a bool) of at least `minimum`."""
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"an integer >= {minimum}")
        return value

    return convert


def address_value(value: Any) -> Address:
    """A 0x-prefixed 20-byte hex address."""
    if not isinstance(value, str):
        raise ValueError("a 0x-prefixed 20-byte hex address")
    try:
        return to_address(value)
    except ValueError:
        raise ValueError("a 0x-prefixed 20-byte hex address") from None


def folder_list(base: Path) -> Callable[[Any], tuple[Path, ...]]:
    """A converter taking a list of folder paths, relative ones under `base`."""
    def convert(value: Any) -> tuple[Path, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip()
                                                  for v in value):
            raise ValueError("a list of folder paths")
        paths = [Path(v).expanduser() for v in value]
        return tuple(p if p.is_absolute() else base / p for p in paths)

    return convert


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:]+\]"
                     r"(:[0-9]{1,5})?$")
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024 * 1024, "GiB": 1024 ** 3}


def origin_list(value: Any) -> tuple[str, ...]:
    """A list of http(s) origins (scheme, host, optional port), lower-cased."""
    if not isinstance(value, list) or not all(isinstance(v, str) and _ORIGIN.match(v)
                                              for v in value):
        raise ValueError("a list of origins such as https://wallet.example:8443")
    return tuple(v.lower() for v in value)


def parse_size(value: Any) -> int:
    """Bytes from `1048576`, `64KiB`, `4MiB` or `1GiB`; ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) <= 0:
        raise ValueError("a size above zero: bytes, or with KiB, MiB or GiB (64KiB, 4MiB)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def size_at_least(minimum: int, shown: str) -> Callable[[Any], int]:
    """A converter taking a size (`parse_size`) of at least `minimum` bytes (`shown`)."""
    def convert(value: Any) -> int:
        size = parse_size(value)
        if size < minimum:
            raise ValueError(f"a size of at least {shown}")
        return size
    return convert
