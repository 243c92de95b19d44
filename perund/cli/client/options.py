"""argparse pieces that refuse what would otherwise be taken without a word: an option given
twice, and a count that is not a positive whole number."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

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
