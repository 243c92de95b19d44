"""Mistakes refused with a usage error (exit 2) instead of taken without a word: an option
given twice (the last amount or currency would win), options that exclude each other, counts
below 1, and an empty time range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from perund.cli.client.commands import Context, channel_list
from perund.cli.client.errors import UsageError
from perund.cli.client.history_commands import history
from perund.cli.client.parser import build_parser, build_shell_parser
from perund.cli.client.render import Style


def _words(line: str) -> list[str]:
    return line.split()


@pytest.mark.parametrize("line", [
    "channel open bob --self 1 --self 2 --peer 3",
    "channel open bob --self 1 --peer 1 --peer 3",
    "channel open bob --self 1 --currency ETH --currency PRN",
    "channel open bob --self 1 --via ingrid --max-fee 1 --max-fee 2",
    "channel open bob --self 1 --via ingrid --via carol",
    "pay bob 0.1 --currency ETH --currency PRN",
    "request bob 0.1 --currency PRN --currency ETH",
    "pay bob 0.1 --reference a --reference b",
    "history --limit 5 --limit 6",
    "channel close bob --peer-wait 10 --peer-wait 20",
    "--session 0x01 --session 0x02 balance",
])
def test_an_option_given_twice_is_refused(line: str) -> None:
    with pytest.raises(UsageError, match="given twice: give it once"):
        build_parser(usage_errors_raise=True).parse_args(line.split())
    shell_line = line.split()
    if shell_line[0] != "--session":
        with pytest.raises(UsageError, match="given twice"):
            build_shell_parser().parse_args(shell_line)


def test_the_one_shot_parser_exits_with_the_usage_code(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(_words("channel open bob --self 1 --self 2"))
    assert exited.value.code == 2
    assert "argument --self: given twice" in capsys.readouterr().err


@pytest.mark.parametrize("line", [
    "--session 0x01 balance --session 0x02",
    "--node 127.0.0.1:1 --json balance --node=127.0.0.1:2",
    "--token-file a balance --token-file b",
])
def test_a_global_option_before_and_after_the_command_is_refused(
        line: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Which session (or node) was meant is unknown: refused, not the last one taken."""
    from perund.cli.client.main import main

    try:
        status = main(line.split())
    except SystemExit as exited:  # argparse's own exit (no --json)
        status = exited.code  # type: ignore[assignment]
    assert status == 2
    said = capsys.readouterr()
    assert "given twice: give it once" in said.err + said.out


def test_options_given_once_parse_as_before() -> None:
    args = build_parser().parse_args(_words("channel open bob --self 1 --peer 2 --currency prn"))
    assert (args.ours, args.theirs, args.currency) == ("1", "2", "prn")
    defaults = build_parser().parse_args(_words("channel open bob --self 1"))
    assert (defaults.theirs, defaults.currency) == ("0", "ETH")
    watched = build_parser().parse_args(_words("watch --topic proposals --topic updates"))
    assert watched.topic == ["proposals", "updates"]


@pytest.mark.parametrize("line", ["watch --count -1", "watch --count 0", "history --limit 0",
                                  "channel list --retired --limit -5", "watch --count x"])
def test_counts_are_whole_numbers_of_at_least_one(line: str) -> None:
    with pytest.raises(UsageError, match="expected a whole number of at least 1"):
        build_parser(usage_errors_raise=True).parse_args(line.split())


@pytest.mark.parametrize(("line", "says"), [
    ("channel close bob --peer-wait soon", "expected seconds or a duration"),
    ("channel close bob --peer-wait -5", "expected seconds or a duration"),
    ("channel close bob --peer-wait 10x", "expected seconds or a duration"),
    ("channel close bob --force --peer-wait 10", "not allowed with argument --force"),
    ("channel close bob --peer-wait 2d", "at most a day"),
    ("channel close bob --peer-wait 86401", "at most a day"),
    ("channel close bob --peer-wait 99999999999999999999999", "expected seconds"),
    ("channel close bob --peer-wait \u0663", "expected seconds"),
])
def test_a_close_s_wait_is_a_duration_and_not_with_force(line: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        build_parser(usage_errors_raise=True).parse_args(line.split())


@pytest.mark.parametrize(("wait", "seconds"), [("90", 90), ("90s", 90), ("10m", 600),
                                               ("1h", 3600), ("0", 0), ("1.5s", 2),
                                               ("86400", 86_400), ("24h", 86_400)])
def test_a_close_s_wait_is_taken_in_seconds(wait: str, seconds: int) -> None:
    args = build_parser().parse_args(["channel", "close", "bob", "--peer-wait", wait])
    assert args.peer_wait == seconds and not args.force


class _NoNode:
    """A node that must not be asked: the mistake is refused before."""

    token = "operator-token"

    def result(self, method: str, params: dict[str, Any], timeout: float | None = 0) -> Any:
        raise AssertionError(f"the node was asked {method}")


def _run(line: str) -> None:
    args = build_parser().parse_args(line.split())
    ctx = Context(_NoNode(), Style(False), "127.0.0.1:1",  # type: ignore[arg-type]
                  "0x" + "ab" * 16)
    handler = history if args.command == "history" else channel_list
    handler(ctx, args)


@pytest.mark.parametrize(("line", "complaint"), [
    ("history --limit 5 --all", "--limit and --all exclude each other"),
    ("history --limit 5 --csv out.csv", "--limit and --csv exclude each other"),
    ("channel list --limit 5", "--limit goes with --retired"),
    ("history --since 2026-12-07 --until 2026-12-01",
     "--since 2026-12-07 is not before --until 2026-12-01: no payment can match"),
    ("history --since 2026-12-01 --until 2026-12-01", "is not before --until"),
])
def test_options_that_exclude_each_other_are_refused(line: str, complaint: str,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # should --csv be taken after all, its file lands there
    with pytest.raises(UsageError, match=complaint):
        _run(line)

