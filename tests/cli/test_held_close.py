"""`channel close --force` on a channel held because the chain lost the peer's deposit
(`depositsBack` in its info): the user is told plainly that each side gets back its deposit,
not its balance, and asked (`--yes` answers; no terminal: refused, nothing done); the close
then carries `acceptDepositsBack`. A channel not so held is closed as before."""

from __future__ import annotations

import time
from typing import Any

from perund.cli.client import close_commands, commands
from perund.cli.client.errors import EXIT_USAGE, UsageError
from perund.cli.client.parser import build_parser
from perund.cli.client.render import Style, channel_details

SESSION = "0x" + "ab" * 16
CHANNEL = "0x" + "cd" * 32
HELD = {"balances": {"ETH": {"self": "6", "peer": "2"}}, "challengeDuration": 60,
        "depositsMissing": {"ETH": {"expected": "8", "held": "5"}}, "depositsBack": {"ETH": "5"}}


class _Node:
    """Answers `channel_get` with the channel; records each `channel_close`'s parameters."""

    token = "operator-token"

    def __init__(self, **channel: Any) -> None:
        self.channel = {"channelId": CHANNEL, "peer": "bob", "phase": "open", **channel}
        self.closes: list[dict[str, Any]] = []

    def result(self, method: str, params: dict[str, Any], timeout: float | None = 0) -> Any:
        if method == "channel_get":
            return self.channel
        if method == "node_time":
            return time.time()
        if method == "channel_list":
            return [self.channel]
        if method == "channel_close":
            self.closes.append(params)
            return {**self.channel, "phase": "closed", "paidOut": {"ETH": "5"}}
        raise AssertionError(f"unexpected {method}")


def _close(line: str, node: _Node, answer: bool | None) -> tuple[Any, list[str]]:
    """Run `line` against `node` (`answer`: the user's, None: no terminal), and the call
    of a Long; what it gave (or the UsageError raised) and the questions asked."""
    ctx = commands.Context(node, Style(False), "127.0.0.1:1", SESSION)  # type: ignore[arg-type]
    questions: list[str] = []
    if answer is not None:
        ctx.confirm = lambda question: questions.append(question) or answer
    try:
        closing = close_commands.channel_close(ctx, build_parser().parse_args(line.split()))
    except UsageError as exc:
        return exc, questions
    assert isinstance(closing, commands.Long)
    return closing.call(), questions


def test_the_terms_are_said_plainly_and_nothing_is_done_without_a_terminal() -> None:
    node = _Node(**HELD)
    refused, _ = _close(f"channel close {CHANNEL} --force", node, None)
    assert isinstance(refused, UsageError) and refused.exit_code == EXIT_USAGE
    assert refused.message.startswith(
        "channel 0xcdcdcdcd… with bob is held: the chain no longer holds bob's deposit (8 ETH "
        "expected, 5 ETH held). A forced close now pays each side back exactly what it "
        "deposited, not its balance: you get back 5 ETH (your balance is 6 ETH: the 1 ETH bob "
        "paid you is forfeited).")
    assert refused.message.endswith("Nothing was done: give --yes to force the close on these "
                                    "terms (no question is asked without a terminal, nor in "
                                    "the shell)")
    assert node.closes == []


def test_the_user_is_asked_and_a_yes_accepts_the_terms_and_only_a_held_channel_asks() -> None:
    node = _Node(**HELD)
    declined, questions = _close(f"channel close {CHANNEL} --force", node, False)
    assert isinstance(declined, UsageError) and node.closes == []
    assert len(questions) == 1
    assert questions[0].endswith(".\nForce the close on these terms? [y/N] ")
    closed, _ = _close(f"channel close {CHANNEL} --force", node, True)
    assert closed["phase"] == "closed"
    closed, questions = _close(f"channel close {CHANNEL} --force --yes", node, None)
    assert questions == []
    assert [c.get("acceptDepositsBack") for c in node.closes] == [True, True]
    assert all(c["force"] is True for c in node.closes)
    # A channel not so held is closed as before, asking nothing; so is a cooperative close
    # of a held one (the node refuses it, saying why).
    for channel in ({}, {k: v for k, v in HELD.items() if k != "depositsBack"}):
        node = _Node(**channel)
        _, questions = _close(f"channel close {CHANNEL} --force", node, None)
        assert questions == [] and node.closes == [{"sessionId": SESSION,
                                                    "channelId": CHANNEL, "force": True}]
    node = _Node(**HELD)
    _close(f"channel close {CHANNEL}", node, None)
    assert node.closes == [{"sessionId": SESSION, "channelId": CHANNEL, "force": False}]


def test_our_payments_coming_back_are_said_too() -> None:
    node = _Node(**{**HELD, "balances": {"ETH": {"self": "4", "peer": "4"}}})
    refused, _ = _close(f"channel close {CHANNEL} --force", node, None)
    assert "you get back 5 ETH (your balance is 4 ETH: the 1 ETH you paid bob comes back to " \
        "you)" in str(refused)


def test_the_channel_info_says_a_forced_close_gets_the_deposit_back() -> None:
    info = {**_Node(**HELD).channel, "version": 3}
    [line] = [x for x in channel_details(info, Style(False)).splitlines()
              if x.startswith("held")]
    assert line.split(None, 1)[1] == (
        "the chain lost its deposits (8 ETH expected, 5 ETH held): no payment until they are "
        "back; a forced close gets you back your deposit, not your balance: 5 ETH")
