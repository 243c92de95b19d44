"""`intermediary.fee` in session.yaml: the file's checks (one line per problem, naming the key)
and the resolution against the node's currencies when the session opens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from perund.api.amounts import Currencies, Currency
from perund.channel.fees import FeeTerms
from perund.channel.types import ETH, Address
from perund.errors import InvalidConfig
from perund.session.config import load_session_config
from perund.session.fee_config import FeeSetting, resolve_fee

from .test_config import _document, _problem_names, _write, session_dir  # noqa: F401

PRN = Address(b"\x42" * 20)
CURRENCIES = Currencies([Currency("PRN", PRN, 6)])


def loaded(folder: Path, fee: Any) -> tuple[FeeSetting, ...]:
    document = _document(intermediary={"enabled": True, "fee": fee})
    return load_session_config(_write(folder, document)).intermediary.fee


def test_a_fee_per_currency_is_read_and_resolved(session_dir: Path) -> None:  # noqa: F811
    settings = loaded(session_dir, {"ETH": {"base": "0.0001", "ppm": 1000},
                                    "PRN": {"ppm": 50}, "XYZ": {"base": 2}})
    assert settings == (FeeSetting("ETH", "0.0001", 1000), FeeSetting("PRN", "0", 50),
                        FeeSetting("XYZ", "2", 0))
    assert resolve_fee(settings[:2], CURRENCIES) == {ETH: FeeTerms(10**14, 1000),
                                                     PRN: FeeTerms(0, 50)}
    document = _document(intermediary={"enabled": True})
    assert load_session_config(_write(session_dir, document)).intermediary.fee == ()


@pytest.mark.parametrize(("fee", "name", "requirement"), [
    ({"ETH": {"base": "-1"}}, "intermediary.fee.ETH.base", "non-negative decimal string"),
    ({"ETH": {"base": -1}}, "intermediary.fee.ETH.base", "non-negative decimal string"),
    ({"ETH": {"base": 0.0001}}, "intermediary.fee.ETH.base", "a YAML number loses digits"),
    ({"ETH": {"base": "1e-4"}}, "intermediary.fee.ETH.base", "non-negative decimal string"),
    ({"ETH": {"ppm": 1_000_001}}, "intermediary.fee.ETH.ppm", "an integer in 0..1000000"),
    ({"ETH": {"ppm": -1}}, "intermediary.fee.ETH.ppm", "an integer in 0..1000000"),
    ({"ETH": {"ppm": "10"}}, "intermediary.fee.ETH.ppm", "an integer in 0..1000000"),
    ({"ETH": {"ppm": True}}, "intermediary.fee.ETH.ppm", "an integer in 0..1000000"),
    ({"ETH": {"percent": 1}}, "intermediary.fee.ETH.percent", "unknown key"),
    ({"ETH": {}}, "intermediary.fee.ETH", "a mapping with base and/or ppm"),
    ({"ETH": "0.1"}, "intermediary.fee.ETH", "a mapping with base and/or ppm"),
    ({"E T H": {"ppm": 1}}, "intermediary.fee", "currency symbols"),
    ("0.1 ETH", "intermediary.fee", "a mapping of currency symbols"),
])
def test_a_bad_fee_is_one_problem_naming_its_key(session_dir: Path, fee: Any, name: str,  # noqa: F811
                                                 requirement: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        loaded(session_dir, fee)
    assert _problem_names(caught.value) == {name}
    (problem,) = caught.value.data["problems"]
    assert requirement in problem["requirement"]
    assert "\n" not in caught.value.message


def test_an_unknown_currency_or_too_many_decimals_fail_when_the_session_opens() -> None:
    with pytest.raises(InvalidConfig, match=r"^intermediary\.fee\.XYZ: unknown currency \(this "
                                            r"node knows ETH, PRN\)$"):
        resolve_fee((FeeSetting("XYZ", "1", 0),), CURRENCIES)
    with pytest.raises(InvalidConfig, match=r"^intermediary\.fee\.PRN\.base: at most 6 decimal "
                                            r"places for this currency$"):
        resolve_fee((FeeSetting("PRN", "0.0000001", 0),), CURRENCIES)
    with pytest.raises(InvalidConfig, match="unknown currency"):
        resolve_fee((FeeSetting("prn", "1", 0),), CURRENCIES)  # symbols are exact


def test_every_fee_problem_is_named_at_once() -> None:
    """One reading names them all (found by an audit: they came one at a time)."""
    with pytest.raises(InvalidConfig) as caught:
        resolve_fee((FeeSetting("XYZ", "1", 0), FeeSetting("PRN", "0.0000001", 0)), CURRENCIES)
    assert caught.value.message == ("intermediary.fee.XYZ: unknown currency (this node knows "
                                    "ETH, PRN); intermediary.fee.PRN.base: at most 6 decimal "
                                    "places for this currency")
    assert _problem_names(caught.value) == {"intermediary.fee.XYZ", "intermediary.fee.PRN.base"}


def test_both_keys_of_one_fee_are_checked(session_dir: Path) -> None:  # noqa: F811
    with pytest.raises(InvalidConfig) as caught:
        loaded(session_dir, {"ETH": {"base": 0.0001, "ppm": 5_000_000}})
    assert _problem_names(caught.value) == {"intermediary.fee.ETH.base",
                                            "intermediary.fee.ETH.ppm"}
