"""perund-cli with a token: a node on the embedded chain (whose test token PRN every generated
user holds), `--currency` in any letter case on open, pay and request, `balance` and `node
info` listing every asset, and the errors of an unknown currency or too many decimals."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import cli_env
from tests.cli.test_oneshot import next_push, one_error, run, start
from tests.integration.daemons import Daemon, generated, running


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Daemon, dict[str, str]]]:
    setup = generated(tmp_path / "node")
    with running(setup.node_config, workdir=tmp_path) as (daemon,):
        yield daemon, {u.name: str(u.session_file) for u in setup.users}


def test_a_token_channel_from_the_command_line(node: tuple[Daemon, dict[str, str]],
                                               tmp_path: Path) -> None:
    daemon, files = node
    env = cli_env(daemon, tmp_path)
    info = run(env, "node", "info").stdout
    assert re.search(r"^currencies\s+ETH \(18 decimals\), PRN \(18 decimals, 0x[0-9a-fA-F]{40}"
                     r"\)$", info, re.M), info
    alice = run(env, "session", "open", files["alice"], "-q").stdout.strip()
    bob = run(env, "session", "open", files["bob"], "-q").stdout.strip()
    a, b = dict(env, PERUND_SESSION=alice), dict(env, PERUND_SESSION=bob)
    balance = run(a, "balance").stdout
    assert re.search(r"^ETH\s+1000000$", balance, re.M) and \
        re.search(r"^PRN\s+1000000$", balance, re.M), balance

    watch = start(b, "watch", "--json")
    try:
        opening = start(a, "channel", "open", "bob", "--self", "10", "--peer", "5",
                        "--currency", "prn")
        proposal = next_push(watch, "proposal")
        assert proposal["balances"] == {"PRN": {"self": "5", "peer": "10"}}
        assert run(b, "proposal", "accept", proposal["proposalId"]).returncode == 0
        out, err = opening.communicate(timeout=120)
        assert opening.returncode == 0, err
        opened = re.match(r"channel (0x[0-9a-f]{64}) with bob is open: you 10 PRN, bob 5 PRN, ",
                          out)
        assert opened, out
        cid = opened.group(1)

        paid = run(a, "pay", "bob", "2.5", "--currency", "Prn")
        assert paid.stdout == f"paid 2.5 PRN to bob on channel {cid[:10]}…: you 7.5 PRN, " \
                              "bob 7.5 PRN (version 1)\n", paid.stderr
        asking = start(a, "request", "bob", "0.5", "--currency", "PRN")
        update = next_push(watch, "open")
        assert run(b, "update", "accept", cid, update["updateId"]).returncode == 0
        out, err = asking.communicate(timeout=60)
        assert out.startswith("bob paid your request of 0.5 PRN on channel"), (out, err)

        one_error(run(a, "pay", "bob", "1", "--currency", "DOGE"), 1,
                  r"invalid --currency: must be one of 'ETH', 'PRN' \(-32602\)")
        one_error(run(a, "pay", "bob", "0.0000000000000000001", "--currency", "prn"), 1,
                  r"invalid amount: at most 18 decimal places for this currency \(-32602\)")
        one_error(run(a, "pay", "bob", "1"), 1,  # the channel holds no ETH
                  r"this channel holds no ETH, only PRN \(203\)")

        closing = start(a, "channel", "close", "bob")
        final = next_push(watch, "final")
        assert run(b, "update", "accept", cid, final["updateId"]).returncode == 0
        out, err = closing.communicate(timeout=120)
        assert closing.returncode == 0, err
        assert out.endswith("paid out: you 8 PRN, bob 7 PRN\n"), out
    finally:
        watch.terminate()
        watch.wait(10)
    assert re.search(r"^PRN\s+999998$", run(a, "balance").stdout, re.M)
    assert re.search(r"^PRN\s+1000002$", run(b, "balance").stdout, re.M)
    history = run(a, "history", "--currency", "prn").stdout
    assert re.search(r"-2\.5 PRN\s+bob", history) and re.search(r"\+0\.5 PRN\s+bob", history), \
        history
