"""perund-cli's parts that need no node: options, the environment, error lines, help on every
level, completion, and how pushes read (including kinds this CLI does not know)."""

from __future__ import annotations

import argparse
import io
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from perund.cli.apiclient import ApiClient, ApiError, AuthFailed, NodeUnreachable
from perund.cli.client.completion import ShellCompleter
from perund.cli.client.durations import duration, duration_refusal
from perund.cli.client.errors import (
    EXIT_AUTH,
    EXIT_NODE_ERROR,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    TokenError,
    UsageError,
    describe_api_error,
    failure_of,
)
from perund.cli.client.parser import build_parser, build_shell_parser, subcommands, walk
from perund.cli.client.render import Style, colour_wanted, describe_push, table
from perund.cli.client.settings import (
    NodeAddress,
    check_session_id,
    parse_node,
    state_dir,
    token_of,
)
from perund.cli.client.shell import Shell
from perund.cli.client.shell_state import Pending


def test_node_addresses() -> None:
    assert parse_node("10.0.0.1:5000") == NodeAddress("10.0.0.1", 5000)
    assert parse_node(":5000") == parse_node("5000") == NodeAddress("127.0.0.1", 5000)
    assert parse_node("[::1]:5000") == NodeAddress("::1", 5000)
    assert str(parse_node("[::1]:5000")) == "[::1]:5000"
    assert parse_node("http://localhost:50001/rpc") == NodeAddress("localhost", 50001)
    for bad in ("host", "host:0", "host:70000", "[::1]5000", "host:port", "127.0.0.1 :5000",
                "ho st:5000"):
        with pytest.raises(UsageError):
            parse_node(bad)
    with pytest.raises(UsageError, match="plain http"):
        parse_node("https://127.0.0.1:52001")
    with pytest.raises(UsageError, match="no user or password") as caught:
        parse_node("user:Pa55w0rd@127.0.0.1:52001")
    assert "Pa55w0rd" not in str(caught.value)


@given(st.integers(min_value=1, max_value=65535))
def test_any_port_parses(port: int) -> None:
    assert parse_node(f"example.org:{port}").port == port


def test_the_token_comes_from_the_option_then_the_environment(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    a, b = "token-a-" + "A" * 24, "pdt_" + "0" * 16 + "_" + "b" * 43
    (folder / "a").write_text(a + "\n")
    (folder / "b").write_text(b)
    env = {"PERUND_TOKEN": "token-env", "PERUND_TOKEN_FILE": str(folder / "b")}
    assert token_of(str(folder / "a"), env) == a
    assert token_of(None, env) == "token-env"
    assert token_of(None, {"PERUND_TOKEN_FILE": str(folder / "b")}) == b
    with pytest.raises(TokenError, match="no API token"):
        token_of(None, {})
    with pytest.raises(TokenError, match="cannot read the token file"):
        token_of(str(folder / "missing"), {})
    # A keystore's password file given by mistake is refused before anything is sent.
    (folder / "password").write_text("S3cret!pass@word#2026\n")
    with pytest.raises(TokenError, match="does not hold an API token") as refused:
        token_of(str(folder / "password"), {})
    assert "S3cret" not in str(refused.value)
    # perund generate's password files have a token's letters: refused by their length.
    (folder / "password").write_text("perund-dev-password\n")
    with pytest.raises(TokenError, match="does not hold an API token") as refused:
        token_of(str(folder / "password"), {})
    assert "dev-password" not in str(refused.value)


def test_session_ids_and_the_state_dir() -> None:
    assert check_session_id("AB" * 16) == "0x" + "ab" * 16
    with pytest.raises(UsageError):
        check_session_id("0x1234")
    assert str(state_dir({"XDG_STATE_HOME": "/var/state"})) == "/var/state/perund"
    assert str(state_dir({"XDG_STATE_HOME": "relative"})).endswith(".local/state/perund")


def test_durations() -> None:
    assert [duration(t) for t in ("90", "90s", "10m", "2h", "1d")] == [90, 90, 600, 7200, 86400]
    for bad in ("0", "-5", "1w", "1.5h", ""):
        with pytest.raises(UsageError):
            duration(bad)


def test_a_refused_challenge_duration_is_said_in_the_units_typed() -> None:
    def refused(value: int) -> ApiError:
        return ApiError("channel_open", {"code": 203, "message": "challenge duration …",
                                         "data": {"name": "challengeDuration",
                                                  "value": str(value), "minimum": 90,
                                                  "maximum": 2592000}})

    too_long = duration_refusal(refused(31 * 86400), "31d")
    assert too_long is not None and failure_of(too_long, "n:1").line == (
        "--challenge-duration 31d is too long: this node's maximum is 30d, as a dispute would "
        "keep the funds that long (allowed: 90s to 30d) (203)")
    too_short = duration_refusal(refused(60), "1m")
    assert too_short is not None and too_short.message == (
        "--challenge-duration 1m is too short: this node's minimum is 90s, the time it needs "
        "to answer a dispute (allowed: 90s to 43200m)")
    assert duration_refusal(refused(3), "3").message.startswith(  # type: ignore[union-attr]
        "--challenge-duration 3 is too short: this node's minimum is 90s")
    other = ApiError("channel_open", {"code": 203, "message": "insufficient balance",
                                      "data": {"name": "balances"}})
    assert duration_refusal(other, "31d") is None


def test_error_lines_and_exit_codes() -> None:
    not_found = ApiError("channel_get", {"code": 201, "message": "no such channel", "data": {
        "category": "client", "type": "channel", "id": "0x12ab"}})
    failure = failure_of(not_found, "n:1")
    assert (failure.exit_code, failure.line) == (EXIT_NODE_ERROR, "channel 0x12ab not found (201)")
    assert failure.to_json()["error"]["code"] == 201
    bad = {"code": -32602, "message": "Invalid params", "data": {
        "field": "balances.ETH.self", "requirement": "must be above zero"}}
    assert describe_api_error(bad) == "invalid --self (ETH): must be above zero"
    rejected = {"code": 102, "message": "the peer rejected the update: busy", "data": {
        "category": "participant", "reason": "busy"}}
    assert describe_api_error(rejected) == "the peer rejected the update: busy"
    timed_out = {"code": 301, "message": "transaction timed out", "data": {"txHash": "0xfe"}}
    assert describe_api_error(timed_out) == "transaction timed out (txHash 0xfe)"
    assert failure_of(NodeUnreachable("connection refused"), "h:1").line == \
        "cannot reach the node at h:1: connection refused"
    # A peer chose this reason: printed escaped, it redraws nothing and forges no line.
    forged = ApiError("channel_send", {"code": 102, "message": "the peer rejected the update: "
                                       "no\x1b[2J\nerror: all funds lost", "data": {}})
    assert failure_of(forged, "h:1").line == \
        "the peer rejected the update: no\\x1b[2J\\nerror: all funds lost (102)"
    codes = {failure_of(e, "h:1").exit_code for e in (
        NodeUnreachable("x"), AuthFailed("x"), UsageError("x"), not_found)}
    assert codes == {EXIT_UNREACHABLE, EXIT_AUTH, EXIT_USAGE, EXIT_NODE_ERROR}
    assert len(codes) == 4


def test_help_on_every_level(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    paths: list[list[str]] = [[]]

    def collect(p: argparse.ArgumentParser, prefix: list[str]) -> None:
        for name, sub in subcommands(p).items():
            paths.append([*prefix, name])
            collect(sub, [*prefix, name])

    collect(parser, [])
    assert ["channel", "open"] in paths and ["update", "reject"] in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*path, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: perund-cli {' '.join(path)}".rstrip()), path
    # The shell's parser: errors raise, they never exit the shell.
    shell = build_shell_parser()
    assert all(not sub.prog.startswith(" ") for sub in walk(shell))
    with pytest.raises(UsageError, match="required: --self"):
        shell.parse_args(["channel", "open", "bob"])


def test_global_options_may_follow_the_command() -> None:
    args = build_parser().parse_args(["channel", "list", "--session", "0x" + "1" * 32, "--json"])
    assert args.session == "0x" + "1" * 32 and args.json is True
    args = build_parser().parse_args(["--json", "channel", "list"])
    assert args.json is True and args.session is None


def test_colours_only_where_they_work() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert colour_wanted(Tty(), env={"TERM": "xterm"})
    assert not colour_wanted(Tty(), env={"TERM": "xterm", "NO_COLOR": ""})
    assert not colour_wanted(Tty(), env={"TERM": "dumb"})
    assert not colour_wanted(Tty(), no_color=True, env={})
    assert not colour_wanted(io.StringIO(), env={})
    assert Style(False).ok("open") == "open"
    assert table(["A", "B"], [["xx", Style(True).ok("y")]], Style(True)).splitlines()[1] == \
        "xx  \x1b[32my\x1b[0m"


def channel(cid: str, peer: str, phase: str, ours: str, theirs: str) -> dict[str, object]:
    return {"channelId": cid, "peer": peer, "peerAddress": "0x" + "11" * 20, "phase": phase,
            "version": 3, "isFinal": False, "balances": {"ETH": {"self": ours, "peer": theirs}},
            "challengeDuration": 3600}


def test_pushes_read_as_sentences() -> None:
    style = Style(False)
    cid = "0x" + "ab" * 32
    request = {"updateId": "0x" + "01" * 32, "channelId": cid, "type": "open",
               "kind": "request", "channel": channel(cid, "alice", "updating", "0.75", "1.25"),
               "expiry": 1060.0, "error": None}
    before = {"ETH": {"self": "1", "peer": "1"}}
    assert describe_push(request, style, before, node_now=1000.0) == (
        "update 0x01010101… alice requests 0.25 ETH on channel 0xabababab…: would leave you "
        "0.75 ETH, alice 1.25 ETH; answer within 1 min")
    payment = {**request, "type": "updated", "updateId": None, "kind": None, "expiry": None,
               "channel": channel(cid, "alice", "open", "1.5", "0.5")}
    assert describe_push(payment, style, before).startswith(
        "payment alice paid you 0.5 ETH on channel 0xabababab…: you 1.5 ETH, alice 0.5 ETH")
    gone = {**request, "type": "gone", "expiry": None, "error": "the node stopped",
            "channel": channel(cid, "alice", "open", "1", "1")}
    assert describe_push(gone, style) == (
        "update 0x01010101… from alice on channel 0xabababab… is gone unanswered: the node "
        "stopped")
    paid = {"paymentId": 4, "channelId": cid, "peer": "alice", "peerAddress": "0x" + "11" * 20,
            "direction": "received", "currency": "ETH", "amount": "0.5", "version": 3,
            "time": 1000.0, "request": False, "status": "paid", "reference": None}
    assert describe_push(paid, style) == (
        "payment 4 +0.5 ETH from alice on channel 0xabababab… (version 3)")
    gone_proposal = {"type": "gone", "proposalId": "0x" + "02" * 32, "peer": "bob",
                     "peerAddress": "0x" + "22" * 20, "reason": "the node stopped"}
    assert describe_push(gone_proposal, style) == (
        "proposal 0x02020202… from bob is gone unanswered: the node stopped")
    closed = {**payment, "type": "closed", "channel": channel(cid, "alice", "closed", "1.5",
                                                              "0.5")}
    head = "closed channel 0xabababab… with alice: settled on-chain, "
    assert describe_push(closed, style) == head + (
        "you 1.5 ETH, alice 0.5 ETH (this node did not see the payout: `balance` shows your "
        "account)")
    closed["channel"] = {**closed["channel"], "paidOut": {"ETH": "1.5"}}
    assert describe_push(closed, style) == head + "paid out: you 1.5 ETH, alice 0.5 ETH"
    closed["channel"] = {**closed["channel"], "paidOut": {}}
    assert describe_push(closed, style) == head + (
        "the chain paid you only 0 ETH where the state gives you 1.5 ETH")
    # A virtual channel folds back into the ledger channels: nothing went on-chain.
    folded = {**payment, "type": "closed", "channel": {
        **channel(cid, "carol", "closed", "0.9", "0.1"), "kind": "virtual", "via": "ingrid"}}
    assert describe_push(folded, style) == (
        "closed channel 0xabababab… with carol: folded into the ledger channels, no "
        "transaction, you 0.9 ETH, carol 0.1 ETH (back in your ledger channel with ingrid)")
    # A close that never touched the chain says so, without a payout to wait for.
    unfunded = {**closed, "error": "closed without touching the chain: the proposer never "
                                   "countersigned version 0"}
    assert describe_push(unfunded, style) == (
        "closed channel 0xabababab… with alice: closed without touching the chain: the "
        "proposer never countersigned version 0")
    disputed_channel = {**channel(cid, "alice", "disputed", "1", "1"),
                        "onChain": {"version": 3, "timeout": 0}}
    disputed = {**payment, "type": "disputed", "channel": disputed_channel}
    assert describe_push(disputed, style).startswith(
        "disputed channel 0xabababab… with alice: version 3 registered on-chain, the challenge "
        "period ends ")
    # A kind this CLI does not know: shown with what it carries, not dropped.
    novel = {"type": "refuted", "channelId": cid, "channel": channel(cid, "alice", "disputed",
                                                                     "1", "1"), "version": 7}
    assert describe_push(novel, style) == ("refuted channel 0xabababab… with alice: phase "
                                           "disputed, you 1 ETH, alice 1 ETH (version 7)")
    assert describe_push({"something": "else"}, style) == "notification (something else)"


def test_a_history_in_the_shell_leaves_its_channels_and_toolbar_alone() -> None:
    """`history` answers payments, each naming its channel: they are not channel infos (an
    audit: the shell took them for channels, and its toolbar failed every second for good)."""
    import argparse

    from perund.cli.client.commands import Outcome

    shell = Shell(ApiClient(1, "token"), Style(False), "127.0.0.1:1", interactive=False)
    cid = "0x" + "ab" * 32
    shell.channels = {cid: channel(cid, "bob", "open", "1", "1")}
    payments = [{"paymentId": 1, "channelId": cid, "direction": "sent", "amount": "0.1"}]
    shell._show(Outcome(payments, "1 payment"), argparse.Namespace(command="history"))
    assert shell.channels == {cid: channel(cid, "bob", "open", "1", "1")}
    shell.label = "alice"
    assert "1 channel" in shell.toolbar()


def test_completion_of_commands_aliases_channels_and_pending_ids() -> None:
    shell = Shell(ApiClient(1, "token"), Style(False), "127.0.0.1:1", interactive=False)
    shell.peers = ["bob", "carol"]
    cid = "0x" + "ab" * 32
    shell.channels = {cid: channel(cid, "bob", "open", "1", "1")}
    proposal = "0x" + "cd" * 32
    shell.pending = [Pending("proposal", proposal, "carol", None, {})]
    completer = ShellCompleter(shell)

    def complete(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]

    assert complete("chan") == ["channel"]
    assert complete("channel ") == ["open", "list", "info", "close"]
    assert complete("channel open ") == ["bob", "carol"]
    assert complete("channel open c") == ["carol"]
    assert complete("channel open bob --s") == ["--self"]
    assert complete("channel open bob --self ") == []  # a value, not a peer
    assert complete("pay ") == [cid, "bob"]
    assert complete("pay ab") == [cid]
    assert complete("pay bob ") == []
    assert complete("accept ") == [proposal]
    assert complete("peer add ") == []  # a new alias: nothing to offer
    # The node's currencies (node_getConfig, read when the shell starts), in any letter case.
    shell.ctx.symbols = ["ETH", "PRN", "USDC"]
    assert complete("pay bob 1 --currency ") == ["ETH", "PRN", "USDC"]
    assert complete("pay bob 1 --currency p") == ["PRN"]
    assert complete("channel open bob --self 1 --currency u") == ["USDC"]
    assert complete("request bob 1 --currency PRN ") == []


def test_a_currency_is_the_nodes_symbol_in_any_letter_case() -> None:
    from perund.cli.client.commands import Context

    ctx = Context(ApiClient(1, "token"), Style(False), "127.0.0.1:1", None)
    ctx.symbols = ["ETH", "PRN", "cUSD"]
    assert [ctx.currency(t) for t in ("ETH", "eth", "prn", "PRN", "CUSD", "cusd")] == [
        "ETH", "ETH", "PRN", "PRN", "cUSD", "cUSD"]
    assert ctx.currency("DOGE") == "DOGE"  # the node says which it has


def test_progress_lines_without_a_terminal() -> None:
    from perund.cli.client.progress import ProgressLine

    out = io.StringIO()
    progress = ProgressLine(out, tty=False, style=Style(False), every=3600)
    progress.show("closing", "the challenge period ends in 12 s", 1)
    progress.show("closing", "the challenge period ends in 11 s", 2)  # a countdown: no line
    progress.show("closing", "concluding on-chain", 3)
    progress.clear()
    assert out.getvalue() == ("… closing: the challenge period ends in 12 s (1 s)\n"
                              "… closing: concluding on-chain (3 s)\n")
    tty = io.StringIO()
    on_terminal = ProgressLine(tty, tty=True, style=Style(False))
    on_terminal.show("opening", "waiting for bob", 4)
    on_terminal.clear()
    assert tty.getvalue().startswith("\r\x1b[K") and "opening: waiting for bob (4 s)" in \
        tty.getvalue() and tty.getvalue().endswith("\r\x1b[K")



def test_a_progress_line_is_cut_to_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """A redrawn line wider than the terminal would wrap, and each redraw would leave a row
    behind: it is cut to fit, with an ellipsis."""
    from perund.cli.client.progress import ProgressLine

    monkeypatch.setenv("COLUMNS", "40")
    tty = io.StringIO()
    ProgressLine(tty, tty=True, style=Style(False)).show(
        "closing channel 0x486fc47a… with bob", "waiting for bob to sign the final state", 3)
    line = tty.getvalue()[len("\r\x1b[K"):]
    assert len(line) <= 40 - 1 and line.endswith("… (3 s)"), line


def test_unfunded_and_lost_channels_say_so() -> None:
    from perund.cli.client.render import channel_details, channel_rows

    style = Style(False)
    cid = "0x" + "cd" * 32
    funding = channel(cid, "bob", "funding", "2", "0.5")
    rows = channel_rows([funding], style)
    assert "(2 ETH to deposit)" in rows and "(0.5 ETH to deposit)" in rows
    assert "not funded yet" in channel_details(funding, style)
    opened = channel(cid, "bob", "open", "2", "0.5")
    assert "to deposit" not in channel_rows([opened], style)
    assert "lost" in channel_rows([channel(cid, "bob", "chainLost", "2", "0.5")], style)


def test_a_held_channel_says_so_in_one_line() -> None:
    from perund.cli.client.render import channel_details

    style = Style(False)
    opened = channel("0x" + "cd" * 32, "bob", "open", "2", "0.5")
    assert "held" not in channel_details(opened, style)
    held = {**opened, "depositsMissing": {"ETH": {"expected": "2.5", "held": "0.5"}}}
    [line] = [x for x in channel_details(held, style).splitlines() if "held" in x]
    assert line.split() == ["held", "the", "chain", "lost", "its", "deposits", "(2.5", "ETH",
                            "expected,", "0.5", "ETH", "held):", "no", "payment", "or",
                            "close", "until", "they", "are", "back"]


def test_virtual_channels_name_their_intermediary_and_parents() -> None:
    from perund.cli.client.render import channel_details, channel_rows

    style = Style(False)
    cid, la, lc = "0x" + "cd" * 32, "0x" + "1a" * 32, "0x" + "1c" * 32
    virtual = {**channel(cid, "carol", "open", "2", "0.5"), "kind": "virtual", "via": "ingrid",
               "fundedBy": [la, lc]}
    assert "carol via ingrid" in channel_rows([virtual], style)
    details = channel_details(virtual, style)
    assert "virtual, via ingrid, funded by 0x1a1a1a1a… and 0x1c1c1c1c…" in details
    locking = {**virtual, "phase": "funding"}
    assert "(2 ETH to lock)" in channel_rows([locking], style)
    assert "to be locked" in channel_details(locking, style)
    ledger = {**channel(la, "ingrid", "open", "7", "10"), "kind": "ledger", "funds": [cid]}
    assert "virtual channels 0xcdcdcdcd…" in channel_details(ledger, style)
    paying = {**ledger, "fees": {"ETH": {"earned": "0", "paid": "0.0011"}}}
    assert "fees ETH" in channel_details(paying, style)
    assert "earned 0, paid 0.0011" in channel_details(paying, style)


def test_max_fee_goes_with_via() -> None:
    from perund.cli.client.commands import Context, channel_open

    args = build_parser().parse_args(["channel", "open", "carol", "--self", "1", "--via",
                                      "ingrid", "--max-fee", "0.01"])
    assert (args.via, args.max_fee) == ("ingrid", "0.01")
    alone = build_parser().parse_args(["channel", "open", "carol", "--self", "1",
                                       "--max-fee", "0.01"])
    ctx = Context(ApiClient(1, "token"), Style(False), "127.0.0.1:1", None)
    with pytest.raises(UsageError, match="--max-fee goes with --via"):
        channel_open(ctx, alone)  # refused before the node is asked anything


def test_text_another_party_chose_is_printed_and_exported_harmlessly(tmp_path: object) -> None:
    from perund.cli.client.history_commands import _cell
    from perund.cli.client.render import shown_text

    forged = "INV\x1b[2J\x1b]0;pwned\x07\r\n+1000 ETH \u202egnp.exe"
    shown = shown_text(forged)
    assert shown.isprintable() and "\\x1b[2J" in shown and "\\r\\n" in shown
    assert shown_text("inv-9 東京") == "inv-9 東京"
    assert _cell('=HYPERLINK("http://evil.example")') == "'=HYPERLINK(\"http://evil.example\")"
    assert [_cell(v) for v in ("+1", "-1", "@x", "\t=1", "inv-9", None)] == [
        "'+1", "'-1", "'@x", "'\t=1", "inv-9", None]


def test_a_usage_error_with_json_is_an_object_on_stdout(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    import json

    from perund.cli.client.main import main

    assert main(["--json", "chanel", "list"]) == 2
    out, err = capsys.readouterr()
    error = json.loads(out)["error"]
    assert error["kind"] == "usage" and "invalid choice: 'chanel'" in error["message"]
    assert err == ""


class _Node:
    """The two calls `resolve_channel` makes, answered from a list of channels and aliases."""

    token = "operator-token"

    def __init__(self, channels: list[dict[str, str]], aliases: set[str]) -> None:
        self.channels = channels
        self.aliases = aliases

    def result(self, method: str, params: dict[str, Any], timeout: float | None = 0) -> Any:
        from perund.cli.apiclient import ApiError

        if method == "channel_list":
            return self.channels
        assert method == "session_getPeer"
        if params["alias"] in self.aliases:
            return {"alias": params["alias"]}
        raise ApiError(method, {"code": 201, "message": "no such peer"})


def test_an_alias_of_hex_letters_never_pays_the_channel_its_id_starts_with() -> None:
    """`pay f 0.1` with a contact named f paid bob, whose channel's ID began with f (the
    isolation review's finding): a ref that is an alias and an ID prefix is refused."""
    from perund.cli.client.commands import Context
    from perund.cli.client.errors import NotFound, UsageError

    bobs = {"channelId": "0xfd72" + "00" * 30, "peer": "bob", "phase": "open"}
    eds = {"channelId": "0x1234" + "00" * 30, "peer": "ed", "phase": "open"}
    node = _Node([bobs, eds], {"bob", "ed", "f"})
    ctx = Context(node, Style(False), "127.0.0.1:1", "0x" + "ab" * 16)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="both a peer's alias and the start of a channel ID"):
        ctx.resolve_channel("f")  # a contact with no channel
    assert ctx.resolve_channel("0xf") == bobs  # the prefix, said so
    assert ctx.resolve_channel("fd7") == bobs  # no such alias: the prefix
    assert ctx.resolve_channel("ed") == eds  # an alias no channel ID starts with
    node.channels.append({"channelId": "0xed" + "00" * 31, "peer": "bob", "phase": "closed"})
    with pytest.raises(UsageError, match="both"):
        ctx.resolve_channel("ed")
    with pytest.raises(NotFound):
        ctx.resolve_channel("carol")


def test_a_peer_is_named_in_any_letter_case() -> None:
    """The node looks aliases up regardless of case (docs/configuration.md), so `pay BOB`
    finds bob's channel too."""
    from perund.cli.client.commands import Context

    bobs = {"channelId": "0x1234" + "00" * 30, "peer": "bob", "phase": "open"}
    ctx = Context(_Node([bobs], {"bob"}), Style(False), "127.0.0.1:1",  # type: ignore[arg-type]
                  "0x" + "ab" * 16)
    assert ctx.resolve_channel("BOB") == ctx.resolve_channel("bob") == bobs


def test_a_lost_connection_names_no_timeout() -> None:
    """The node's 101 for a connection lost mid-request carries `timeout: null`: the line
    said "(timeout None)"."""
    lost = {"code": 101, "message": "peer bob (0x3cb4…): the connection was lost before the "
            "response came", "data": {"peer": "0x3cb4", "timeout": None}}
    assert failure_of(ApiError("channel_open", lost), "h:1").line == \
        "peer bob (0x3cb4…): the connection was lost before the response came (101)"
    unreachable = {"code": 101, "message": "peer bob unreachable: connection refused",
                   "data": {"peer": "0x3cb4", "timeout": 10.0}}
    assert describe_api_error(unreachable) == \
        "peer bob unreachable: connection refused (timeout 10 s)"
    timed_out = {"code": 102, "message": "peer bob did not answer a proposal within 60 s",
                 "data": {"timeout": 60.0}}
    assert describe_api_error(timed_out) == "peer bob did not answer a proposal within 60 s"


def test_a_timeout_is_said_in_words_and_once() -> None:
    """The node words a timeout as `1 min 10 s`: a message that says it is not followed by it
    again in seconds, and a timeout the message does not say is shown in the same words."""
    timed_out = {"code": 101, "message": "peer bob (0x3cb4…) did not answer a Propose within "
                 "1 min 10 s", "data": {"peer": "0x3cb4", "timeout": 70.0}}
    assert describe_api_error(timed_out) == timed_out["message"]
    unreachable = {"code": 101, "message": "peer bob unreachable: connection refused",
                   "data": {"peer": "0x3cb4", "timeout": 600}}
    assert describe_api_error(unreachable) == \
        "peer bob unreachable: connection refused (timeout 10 min)"


def test_a_refused_session_close_says_it_once() -> None:
    def refused(count: int) -> str:
        return describe_api_error({
            "code": 204, "message": f"session has {count} open channels: close them or use "
            "force", "data": {"openChannels": ["0x" + "ab" * 32] * count}})

    assert refused(1) == "the session has 1 open channel: close it first, or use --force to " \
                         "leave it open on-chain"
    assert refused(2) == "the session has 2 open channels: close them first, or use --force " \
                         "to leave them open on-chain"


def test_channel_info_says_paid_out_once() -> None:
    from perund.cli.client.render import channel_details, payout_text

    style = Style(False)
    closed = {**channel("0x" + "cd" * 32, "bob", "closed", "1.8", "0.7"),
              "paidOut": {"ETH": "1.8"}}
    details = channel_details(closed, style)
    assert "paid out: " not in details
    assert any(line.split() == ["paid", "out", "you", "1.8", "ETH,", "bob", "0.7", "ETH"]
               for line in details.splitlines()), details
    assert payout_text(closed, style) == "paid out: you 1.8 ETH, bob 0.7 ETH"


def test_a_credited_payout_is_shown_as_owed_not_paid_then_withdrawn() -> None:
    from perund.cli.client.render import channel_details, payout_text

    style = Style(False)
    closed = {**channel("0x" + "cd" * 32, "alice", "closed", "13", "7"),
              "paidOut": {"ETH": "0"}, "credited": {"ETH": "13"}}
    text = payout_text(closed, style)
    assert text.startswith("paid out: you 0 ETH, alice 7 ETH; 13 ETH owed to you, not paid "
                           "yet: the Adjudicator could not send it"), text
    assert "warn" not in text and "only" not in text  # not short: the credit is ours
    withdrawn = {**closed, "withdrawn": {"ETH": 1_796_000_000}}
    details = channel_details(withdrawn, style)
    assert "13 ETH credited, withdrawn 2026-11-30T00:53:20Z" in details, details
    assert "owed" not in details, details


def test_a_bad_node_address_names_where_it_came_from() -> None:
    from perund.cli.client.settings import node_of

    with pytest.raises(UsageError, match=r"^PERUND_NODE: bad node address 'garbage'"):
        node_of(None, {"PERUND_NODE": "garbage"})
    with pytest.raises(UsageError, match=r"^--node: bad node address 'garbage'"):
        node_of("garbage", {"PERUND_NODE": "127.0.0.1:1"})
    assert node_of(None, {}) == NodeAddress("127.0.0.1", 50001)


def test_a_bad_max_fee_is_named_as_typed() -> None:
    bad = {"code": -32602, "message": "Invalid params", "data": {
        "field": "maxFee.ETH", "requirement": "a decimal amount, not negative"}}
    assert describe_api_error(bad) == "invalid --max-fee: a decimal amount, not negative"


def test_a_history_row_of_an_unpaid_request_has_no_sign() -> None:
    """A rejected or expired request moved nothing: its amount is shown in parentheses, not
    as `+0.2 ETH` (an audit read it as money that came in)."""
    from perund.cli.client.commands import Context
    from perund.cli.client.history_commands import _row

    ctx = Context(ApiClient(1, "token"), Style(False), "127.0.0.1:1", None)
    payment = {"paymentId": 3, "time": 1000.0, "direction": "received", "amount": "0.2",
               "currency": "ETH", "peer": "bob", "channelId": "0x" + "ab" * 32, "version": None,
               "request": True, "status": "rejected", "reference": None}
    assert _row(payment, ctx)[2:7] == ["(0.2 ETH)", "bob", "0xabababab…", "-",
                                       "request (rejected)"]
    assert _row({**payment, "status": "paid", "version": 4}, ctx)[2] == "+0.2 ETH"


def test_a_mistyped_alias_is_not_found_as_a_peer_or_channel() -> None:
    from perund.cli.client.commands import Context
    from perund.cli.client.errors import NotFound

    class _Node:
        token = "operator-token"

        def result(self, method: str, params: dict[str, object], timeout: float | None = 0
                   ) -> object:
            assert method == "channel_list", method
            return [{"channelId": "0x" + "ab" * 32, "peer": "bob", "phase": "open"}]

    ctx = Context(_Node(), Style(False), "127.0.0.1:1", "0x" + "cd" * 16)  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="peer or channel bobb not found"):
        ctx.resolve_channel("bobb")
    with pytest.raises(NotFound, match=r"^channel 0xdead not found"):
        ctx.resolve_channel("0xdead")


def test_node_info_states_the_challenge_duration_range() -> None:
    """`node info` says the range `--challenge-duration` must lie in, before a refusal does;
    a node that does not say it gets no such line."""
    import types

    from perund.cli.client.commands import Context, node_info

    config: dict[str, Any] = {
        "chainUrl": "embedded", "chainId": 1337, "adjudicator": "0x" + "42" * 20,
        "assets": {"ETH": {"address": "0x" + "00" * 20, "decimals": 18}},
        "commTypes": ["tcp"], "version": "1.0", "responseTimeout": 60.0,
        "minChallengeDuration": 258, "maxChallengeDuration": 30 * 86400}

    class Node:
        token = "operator-token"

        def result(self, method: str, params: dict[str, Any], timeout: float | None = 0) -> Any:
            assert method == "node_getConfig"
            return config

    ctx = Context(Node(), Style(False), "127.0.0.1:1", None)  # type: ignore[arg-type]
    args = types.SimpleNamespace()
    text = node_info(ctx, args).text  # type: ignore[arg-type, union-attr]
    assert "challenge durations  4 min 18 s to 30 d" in text.splitlines()
    del config["minChallengeDuration"], config["maxChallengeDuration"]
    assert "challenge durations" not in node_info(ctx, args).text  # type: ignore[arg-type, union-attr]
