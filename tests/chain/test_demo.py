"""`perund demo`: the walkthrough runs, checks its balances and exits 0."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from perund.cli.demo import ether, run_demo
from perund.cli.main import build_parser


def test_ether_formatting_keeps_every_wei() -> None:
    assert ether(10**18) == "1 ETH"
    assert ether(3 * 10**17) == "0.3 ETH"
    assert ether(1) == "0.000000000000000001 ETH"
    assert ether(0) == "0 ETH"
    assert ether(10**24 + 5) == "1000000.000000000000000005 ETH"


@pytest_twisted.ensureDeferred
async def test_demo_walkthrough_passes_its_checks() -> None:
    out, errors = io.StringIO(), []
    status = await run_demo(reactor, out, 2024, errors.append)
    text = out.getvalue()
    assert (status, errors) == (0, [])
    assert "chain id 2024" in text
    assert "alice now has exactly" in text and "bob now has exactly" in text
    assert text.count("✓") >= 8


def test_parser_requires_a_command() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
    assert build_parser().parse_args(["demo", "--chain-id", "5"]).chain_id == 5


def test_module_runs_as_a_script() -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "perund.cli.main", "demo"],
        cwd=root, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("perund demo")
    assert "Done:" in result.stdout
