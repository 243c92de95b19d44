"""Numbers as an operator reads them in log lines and messages: counts with their noun in the
right number, durations, amounts with their unit, and times in UTC.

Pure functions, no Twisted: the channel core (perund/channel/) uses them too. A log event that
shows one of these texts keeps the raw value as a field of its own beside it, for machines
(docs/operations.md, "Logs").
"""

from __future__ import annotations

import datetime

ETH_DECIMALS = 18
GWEI_DECIMALS = 9
"""Wei in a gwei, the unit of gas prices, as a power of ten."""


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`count` and `noun`, in the plural unless the count is one: `1 channel`, `0 channels`,
    `3 entries` (with `nouns` for a plural that is not noun + "s")."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def duration_text(seconds: int) -> str:
    """A whole number of seconds, exactly, in the largest units that fit: `45 s`,
    `1 min 30 s`, `2 h`, `30 d 1 s`; a negative one with a minus sign."""
    if seconds < 0:
        return "-" + duration_text(-seconds)
    parts = []
    rest = seconds
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if rest >= size:
            parts.append(f"{rest // size} {unit}")
            rest %= size
    if rest or not parts:
        parts.append(f"{rest} s")
    return " ".join(parts)


def seconds_text(seconds: float) -> str:
    """A configured time in seconds (a timeout): `duration_text` words when it is whole
    (`1 min 10 s`, `2 h`), else as given (`0.5 s`)."""
    if float(seconds).is_integer():
        return duration_text(int(seconds))
    return f"{seconds:g} s"


def utc_text(unix: float) -> str:
    """A unix time as UTC ISO-8601 to the second: `2026-12-06T09:19:56Z`. A time past what a
    date can hold (a chain's far-off timeout) is shown as its number of seconds."""
    try:
        moment = datetime.datetime.fromtimestamp(int(unix), datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return f"unix time {unix}"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def units_text(units: int, decimals: int) -> str:
    """`units` base units as a decimal number of whole units, every significant digit:
    `units_text(15 * 10**17, 18)` is `1.5`."""
    sign, units = ("-", -units) if units < 0 else ("", units)
    whole, fraction = divmod(units, 10**decimals)
    if fraction == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{str(fraction).rjust(decimals, '0').rstrip('0')}"


def asset_text(units: int, symbol: str, decimals: int) -> str:
    """An amount of an asset for a person: `2.5 PRN` for a currency with decimals (`symbol`,
    `decimals`: the node's currency table), `7 units of 0x12…` for one without."""
    if not decimals:
        return f"{units} units of {symbol}"
    return f"{units_text(units, decimals)} {symbol}"


def eth_text(wei: int) -> str:
    """An amount of wei as ETH with its unit: `1.5 ETH`, `0.000021 ETH`."""
    return f"{units_text(wei, ETH_DECIMALS)} ETH"

