"""An intermediary's fee in `session.yaml` (docs/configuration.md, docs/protocol.md
"Intermediary fees"):

    intermediary:
      enabled: true
      fee:
        ETH: {base: "0.0001", ppm: 1000}     # 0.0001 ETH + 0.1 % of what a virtual channel locks
        PRN: {base: "0", ppm: 50}

Read in two steps: the file is checked on its own (`parse_fee`: the shape, amounts as plain
decimal strings, `ppm` in 0..1,000,000), then against the node's currencies when the session
opens (`resolve_fee`: a symbol the node knows, no more decimals than the currency has).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from perund.api.amounts import AMOUNT_PATTERN, AmountError, Currencies, parse_amount
from perund.channel.fees import PPM, FeeSchedule, FeeTerms
from perund.channel.types import Address
from perund.errors import InvalidConfig

_AMOUNT = re.compile(AMOUNT_PATTERN)
_SYMBOL = re.compile(r"^[A-Za-z0-9]{1,16}$")
_KEYS = {"base", "ppm"}


@dataclass(frozen=True, slots=True)
class FeeSetting:
    """One asset's fee as the file says it: the currency's symbol, the base amount (a decimal
    string in the currency's unit) and parts per million of the amount locked."""

    symbol: str
    base: str
    ppm: int


Problem = Callable[[str, object, str], None]
"""Where a problem goes: (key name, value, requirement)."""


def parse_fee(section: object, problem: Problem) -> tuple[FeeSetting, ...]:
    """The settings of `intermediary.fee` (nothing for a missing one); each problem is
    reported with its key's full name."""
    if section is None:
        return ()
    if not isinstance(section, Mapping):
        problem("intermediary.fee", section, "a mapping of currency symbols to {base, ppm}")
        return ()
    settings = []
    for symbol, terms in section.items():
        name = f"intermediary.fee.{symbol}"
        if not isinstance(symbol, str) or not _SYMBOL.fullmatch(symbol):
            problem("intermediary.fee", symbol, "currency symbols (letters and digits)")
            continue
        if not isinstance(terms, Mapping) or not terms:
            problem(name, terms, "a mapping with base and/or ppm")
            continue
        unknown = sorted(str(key) for key in terms if key not in _KEYS)
        if unknown:
            problem(f"{name}.{unknown[0]}", None, "unknown key (base and ppm are known)")
            continue
        base = terms.get("base", "0")
        if isinstance(base, int) and not isinstance(base, bool) and base >= 0:
            base = str(base)
        sound = True  # both keys are checked, so that one reading names every problem
        if not isinstance(base, str) or len(base) > 100 or not _AMOUNT.fullmatch(base):
            problem(f"{name}.base", base, "a non-negative decimal string such as \"0.0001\" "
                    "(quoted: a YAML number loses digits)")
            sound = False
        ppm = terms.get("ppm", 0)
        if type(ppm) is not int or not 0 <= ppm <= PPM:
            problem(f"{name}.ppm", ppm, f"an integer in 0..{PPM} (parts per million)")
            sound = False
        if sound:
            settings.append(FeeSetting(symbol, base, ppm))
    return tuple(settings)


def resolve_fee(settings: tuple[FeeSetting, ...], currencies: Currencies) -> FeeSchedule:
    """The fee schedule by asset; InvalidConfig (one line, naming the key) for a symbol the
    node does not know or an amount with more decimals than its currency has."""
    schedule: dict[Address, FeeTerms] = {}
    problems: list[dict[str, object]] = []
    said: list[str] = []
    for setting in settings:
        name = f"intermediary.fee.{setting.symbol}"
        try:
            currency = currencies.by_symbol(setting.symbol)
        except KeyError:
            known = ", ".join(currencies.symbols())
            problems.append({"name": name, "value": setting.symbol,
                             "requirement": f"one of {known}"})
            said.append(f"{name}: unknown currency (this node knows {known})")
            continue
        try:
            base = parse_amount(setting.base, currency.decimals)
        except AmountError as exc:
            problems.append({"name": f"{name}.base", "value": setting.base,
                             "requirement": str(exc)})
            said.append(f"{name}.base: {exc}")
            continue
        schedule[currency.asset] = FeeTerms(base, setting.ppm)
    if problems:
        # Every problem in one error, as for the rest of the file.
        raise InvalidConfig("; ".join(said), problems=problems,
                            **(problems[0] if len(problems) == 1 else {}))
    return schedule
