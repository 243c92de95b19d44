"""`--challenge-duration`: what the user types (`90`, `90s`, `10m`, `2h`, `1d`), and the node's
refusal of one said back in the unit the user typed it in."""

from __future__ import annotations

import re
from typing import Any

from perund.cli.apiclient import ApiError
from perund.cli.client.errors import CliError, UsageError

_PATTERN = re.compile(r"\s*([0-9]+)\s*(s|m|min|h|d)?\s*")
_UNITS = {"s": 1, None: 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def duration(text: str) -> int:
    """Seconds from `90`, `90s`, `10m`, `2h` or `1d`."""
    match = _PATTERN.fullmatch(text)
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"bad duration {text!r}: give seconds, or 90s, 10m, 2h, 1d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def in_unit_of(seconds: int, typed: str) -> str:
    """`seconds` written as the user wrote `typed` (`30d` for 2592000 after `31d`), or in
    seconds (`90s`) where that unit does not divide it: either way something to type back."""
    match = _PATTERN.fullmatch(typed)
    unit = match.group(2) if match else None
    size = _UNITS[unit]
    if unit is None or seconds % size:
        return f"{seconds}s"
    return f"{seconds // size}{unit}"


def duration_refusal(exc: ApiError, typed: str) -> CliError | None:
    """The node's refusal of `--challenge-duration typed` in the user's units, with the range
    the node allows; None for any other error."""
    data: Any = exc.error.get("data")
    if exc.code != 203 or not isinstance(data, dict) or data.get("name") != "challengeDuration":
        return None
    low, high = data.get("minimum"), data.get("maximum")
    if not isinstance(low, int) or not isinstance(high, int):
        return None  # a node that does not say its range: its own message says what it can
    seconds = duration(typed)
    allowed = f"(allowed: {in_unit_of(low, typed)} to {in_unit_of(high, typed)})"
    if seconds < low:
        why = (f"too short: this node's minimum is {in_unit_of(low, typed)}, the time it needs "
               "to answer a dispute")
    else:
        why = (f"too long: this node's maximum is {in_unit_of(high, typed)}, as a dispute would "
               "keep the funds that long")
    return CliError(f"--challenge-duration {typed.strip()} is {why} {allowed}", exc.code, data)
