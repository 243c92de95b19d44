"""`perund-cli watch` against a stream of pushes made up here: the answers it suggests, and
how it ends."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import pytest

from perund.cli.client.commands import Context
from perund.cli.client.main import watch
from perund.cli.client.render import Style

SESSION = "0x" + "ab" * 16
PROPOSAL = "0x" + "11" * 32
UPDATE = "0x" + "22" * 32
CHANNEL = "0x" + "33" * 32


class _Stream:
    """A push socket that delivers `pushes` once subscribed."""

    def __init__(self, pushes: list[dict[str, Any]],
                 on_push: Callable[[str, Any], None]) -> None:
        self.pushes = pushes
        self.on_push = on_push

    def call(self, method: str, **params: Any) -> str:
        for push in self.pushes:
            self.on_push("sub", push)
        self.pushes = []
        return "sub"

    def close(self) -> None:
        pass


class _Node:
    token = "operator-token"

    def __init__(self, pushes: list[dict[str, Any]], interrupt: bool = False) -> None:
        self.pushes = pushes
        self.interrupt = interrupt

    def push_stream(self, on_push: Callable[[str, Any], None],
                    on_close: Callable[[BaseException | None], None]) -> _Stream:
        return _Stream(self.pushes, on_push)

    def result(self, method: str, params: dict[str, Any], timeout: float | None = 0) -> Any:
        if self.interrupt:
            raise KeyboardInterrupt  # ^C while a push is shown
        assert method == "node_time"
        return 1000.0


def _watch(pushes: list[dict[str, Any]], count: int | None, interrupt: bool = False) -> int:
    ctx = Context(_Node(pushes, interrupt), Style(False), "127.0.0.1:1",  # type: ignore[arg-type]
                  SESSION)
    return watch(ctx, argparse.Namespace(topic=None, count=count, json=False))


def test_no_answer_is_suggested_for_what_is_gone(capsys: pytest.CaptureFixture[str]) -> None:
    pushes = [
        {"proposalId": PROPOSAL, "type": "gone", "peer": "bob", "reason": "expired"},
        {"updateId": UPDATE, "channelId": CHANNEL, "type": "gone", "error": "withdrawn",
         "channel": {"peer": "bob"}},
        {"proposalId": PROPOSAL, "peer": "bob", "balances": {}, "challengeDuration": 60,
         "expiry": 1060.0},
    ]
    assert _watch(pushes, count=3) == 0
    out = capsys.readouterr().out
    assert out.count("perund-cli") == 1, out
    assert out.rstrip().endswith(f"perund-cli proposal accept {PROPOSAL}")


def test_watch_ended_by_ctrl_c_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    push = {"proposalId": PROPOSAL, "peer": "bob", "balances": {}, "challengeDuration": 60}
    assert _watch([push], count=None, interrupt=True) == 130
    assert _watch([push], count=5, interrupt=True) == 130


def test_watch_of_a_session_that_is_closed_ends_saying_so(
        capsys: pytest.CaptureFixture[str]) -> None:
    # One `sessionClosed` per topic: the first ends the watch, which would otherwise wait for
    # ever (it printed "unknown push" and went on).
    closed = {"type": "sessionClosed", "sessionId": SESSION}
    assert _watch([closed, dict(closed)], count=None) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"session {SESSION} was closed" in captured.err
    assert captured.err.count("was closed") == 1
