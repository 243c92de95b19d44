"""`channel close`'s progress line says until when an unreachable peer is waited for (the
node's default, or `--peer-wait`), and a forced close says nothing of it. A forced close of a
virtual channel says what it costs (both ledger channels on-chain) and is asked about first:
refused where no one can be asked, unless `--yes` answers."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest

from perund.cli.client import close_commands, commands, main
from perund.cli.client.errors import EXIT_USAGE, UsageError
from perund.cli.client.parser import build_parser
from perund.cli.client.render import Style, clock
from perund.session.closing import PEER_WAIT

SESSION = "0x" + "ab" * 16
CHANNEL = "0x" + "cd" * 32


class _Node:
    """Answers the calls a close's progress makes: the channel is still open."""

    token = "operator-token"

    def __init__(self, **channel: Any) -> None:
        self.now = time.time()
        self.channel = {"channelId": CHANNEL, "peer": "bob", "phase": "open", **channel}
        self.asked: list[str] = []

    def result(self, method: str, params: dict[str, Any], timeout: float | None = 0) -> Any:
        self.asked.append(method)
        if method == "node_time":
            return self.now
        if method == "channel_get":
            return self.channel
        if method == "channel_list":
            return [{"channelId": CHANNEL, "peer": "bob", "phase": "open"}]
        raise AssertionError(f"unexpected {method}")


def _progress(line: str) -> str:
    node = _Node()
    ctx = commands.Context(node, Style(False), "127.0.0.1:1", SESSION)  # type: ignore[arg-type]
    closing = close_commands.channel_close(ctx, build_parser().parse_args(line.split()))
    assert isinstance(closing, commands.Long)
    return closing.status()


def test_the_cli_knows_the_nodes_default_wait() -> None:
    assert close_commands.DEFAULT_PEER_WAIT == PEER_WAIT


def test_a_close_says_until_when_an_unreachable_peer_is_waited_for() -> None:
    line = _progress(f"channel close {CHANNEL}")
    assert line.startswith("waiting for bob to sign the final state (a dispute at ")
    assert line.endswith(" if bob stays unreachable)")
    before = time.time()
    shorter = _progress(f"channel close {CHANNEL} --peer-wait 1h")
    assert any(clock(before + 3600 + dt) in shorter for dt in range(-1, 4)), shorter
    assert _progress(f"channel close {CHANNEL} --force") == \
        "waiting for bob to sign the final state"


VIRTUAL = {"kind": "virtual", "via": "ingrid", "challengeDuration": 3600,
           "fundedBy": ["0x" + "11" * 32, "0x" + "22" * 32]}


def _close(line: str, node: _Node, answer: bool | None) -> tuple[Any, list[str]]:
    """Run `line` against `node`; `answer`: what the user says when asked (None: no terminal).
    The command's result (or the UsageError it raised) and the questions asked."""
    ctx = commands.Context(node, Style(False), "127.0.0.1:1", SESSION)  # type: ignore[arg-type]
    questions: list[str] = []
    if answer is not None:
        ctx.confirm = lambda question: questions.append(question) or answer
    try:
        return close_commands.channel_close(ctx, build_parser().parse_args(line.split())), \
            questions
    except UsageError as exc:
        return exc, questions


def test_a_forced_close_of_a_virtual_channel_is_refused_where_no_one_can_be_asked() -> None:
    node = _Node(**VIRTUAL)
    refused, _ = _close(f"channel close {CHANNEL} --force", node, None)
    assert isinstance(refused, UsageError) and refused.exit_code == EXIT_USAGE
    assert refused.message.startswith(
        "channel 0xcdcdcdcd… is a virtual channel with bob via ingrid: a forced close disputes "
        "it on-chain through the ledger channels that fund it. Your ledger channel with ingrid "
        "(0x11111111…) is registered and concluded on-chain with it and ends there: its "
        "transactions' gas is yours, and its funds wait out the challenge periods (1 h each). "
        "bob's ledger channel with ingrid goes on-chain and ends too.")
    assert refused.message.endswith("Nothing was done: give --yes to force the close (no "
                                    "question is asked without a terminal, nor in the shell)")
    assert "channel_close" not in node.asked


def test_a_forced_close_of_a_virtual_channel_is_asked_about_first() -> None:
    node = _Node(**VIRTUAL)
    declined, questions = _close(f"channel close {CHANNEL} --force", node, False)
    assert isinstance(declined, UsageError)
    assert declined.message == "the forced close was not confirmed: nothing was done"
    assert len(questions) == 1 and questions[0].endswith(".\nForce the close? [y/N] ")
    assert "Your ledger channel with ingrid" in questions[0]
    assert "channel_close" not in node.asked
    confirmed, questions = _close(f"channel close {CHANNEL} --force", node, True)
    assert isinstance(confirmed, commands.Long) and len(questions) == 1


@pytest.mark.parametrize("line", [f"channel close {CHANNEL} --force --yes",
                                  f"channel close {CHANNEL}"])
def test_yes_or_a_cooperative_close_of_a_virtual_channel_asks_nothing(line: str) -> None:
    closing, questions = _close(line, _Node(**VIRTUAL), None)
    assert isinstance(closing, commands.Long) and questions == []


def test_a_forced_close_of_a_ledger_channel_asks_nothing() -> None:
    closing, questions = _close(f"channel close {CHANNEL} --force", _Node(), None)
    assert isinstance(closing, commands.Long) and questions == []


def test_the_terminal_question_takes_only_a_yes(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for typed, yes in (("y\n", True), ("YES\n", True), ("\n", False), ("", False),
                       ("no\n", False)):
        monkeypatch.setattr("sys.stdin", io.StringIO(typed))
        assert main.ask_on_terminal("Force the close? [y/N] ") is yes
    assert capsys.readouterr().err == "Force the close? [y/N] " * 5


def test_a_script_without_yes_gets_the_refusal_and_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    node = _Node(**VIRTUAL)
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # piped in: not a terminal's answer
    monkeypatch.setattr(main, "ApiClient", lambda *args, **kwargs: node)
    monkeypatch.setenv("PERUND_TOKEN", "operator-token")
    args = build_parser().parse_args(["--session", SESSION, "channel", "close", CHANNEL,
                                      "--force"])
    assert main.run_once(args, Style(False)) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: channel 0xcdcdcdcd… is a virtual channel with bob via ingrid")
    assert "give --yes to force the close" in err and "channel_close" not in node.asked
