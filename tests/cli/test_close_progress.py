"""`channel close`'s progress line says until when an unreachable peer is waited for (the
node's default, or `--peer-wait`), and a forced close says nothing of it."""

from __future__ import annotations

import time
from typing import Any

from perund.cli.client import commands
from perund.cli.client.parser import build_parser
from perund.cli.client.render import Style, clock
from perund.session.closing import PEER_WAIT

SESSION = "0x" + "ab" * 16
CHANNEL = "0x" + "cd" * 32


class _Node:
    """Answers the calls a close's progress makes: the channel is still open."""

    token = "operator-token"

    def __init__(self) -> None:
        self.now = time.time()

    def result(self, method: str, params: dict[str, Any], timeout: float | None = 0) -> Any:
        if method == "node_time":
            return self.now
        if method == "channel_get":
            return {"channelId": CHANNEL, "peer": "bob", "phase": "open"}
        if method == "channel_list":
            return [{"channelId": CHANNEL, "peer": "bob", "phase": "open"}]
        raise AssertionError(f"unexpected {method}")


def _progress(line: str) -> str:
    node = _Node()
    ctx = commands.Context(node, Style(False), "127.0.0.1:1", SESSION)  # type: ignore[arg-type]
    closing = commands.channel_close(ctx, build_parser().parse_args(line.split()))
    assert isinstance(closing, commands.Long)
    return closing.status()


def test_the_cli_knows_the_nodes_default_wait() -> None:
    assert commands.DEFAULT_PEER_WAIT == PEER_WAIT


def test_a_close_says_until_when_an_unreachable_peer_is_waited_for() -> None:
    line = _progress(f"channel close {CHANNEL}")
    assert line.startswith("waiting for bob to sign the final state (a dispute at ")
    assert line.endswith(" if bob stays unreachable)")
    before = time.time()
    shorter = _progress(f"channel close {CHANNEL} --peer-wait 1h")
    assert any(clock(before + 3600 + dt) in shorter for dt in range(-1, 4)), shorter
    assert _progress(f"channel close {CHANNEL} --force") == \
        "waiting for bob to sign the final state"
