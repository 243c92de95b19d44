"""argparse pieces that refuse what would otherwise be taken without a word: an option given
twice, a count that is not a positive whole number, and a wait that is not a duration."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any, Final

from perund.config_values import parse_duration

_GIVEN = "_options_given"
"""The namespace attribute listing the options `Once` has stored, across one parse."""


class Once(argparse.Action):
    """Store an option's value, and refuse the option a second time: with money at stake, the
    last of two amounts or currencies must not silently win (`--self 1 --self 2`)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        given: set[str] = getattr(namespace, _GIVEN, set())
        if self.dest in given:
            raise argparse.ArgumentError(self, "given twice: give it once")
        given.add(self.dest)
        setattr(namespace, _GIVEN, given)
        setattr(namespace, self.dest, values)


def at_least_one(text: str) -> int:
    """A count option's value: a whole number, 1 or more."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return number


MAX_WAIT: Final = 86_400
"""The longest wait option (a day: the node refuses more)."""


def wait_seconds(text: str) -> int:
    """A wait option's value: whole seconds (`90`), or a duration (`90s`, `10m`, `1h`), at
    most a day."""
    plain = text.strip()
    try:
        seconds = float(plain) if plain.isascii() and plain.isdigit() and len(plain) < 10 \
            else parse_duration(plain)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds or a duration such as 90s, 10m or 1h, not {text!r}") from None
    if seconds > MAX_WAIT:
        raise argparse.ArgumentTypeError(f"at most a day (86400 s, 24h), not {text!r}")
    return math.ceil(seconds)


GLOBAL_VALUE_OPTIONS = ("--node", "--token-file", "--session")
"""Global options that take a value and may come before or after the command."""


def given_twice(argv: Sequence[str], names: Sequence[str] = GLOBAL_VALUE_OPTIONS) -> str | None:
    """The first of `names` given twice in `argv` (`--session A balance --session B`: `Once`
    cannot see it, since argparse parses the command's options into a namespace of their
    own), or None."""
    seen: set[str] = set()
    for word in argv:
        if word == "--":
            break
        name = word.split("=", 1)[0]
        if name in names:
            if name in seen:
                return name
            seen.add(name)
    return None
