"""`make demo`'s walkthrough: a real daemon, two sessions, a channel's life over the API."""

from __future__ import annotations

import io
from pathlib import Path

from perund.cli.walkthrough import run_walkthrough


def test_the_walkthrough_runs_end_to_end(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_walkthrough(tmp_path, out) == 0, out.getvalue()
    text = out.getvalue()
    for expected in ("bob's credential on alice's session: refused",
                     "bob is pushed a proposal from alice", "version 22: self 1.78 ETH + 16 PRN",
                     "1000000 → 999996 PRN", "1000000 → 1000004 PRN",
                     "phase closed", "bob is pushed: closed", "sessions closed"):
        assert expected in text, text
    assert "Traceback" not in (tmp_path / "node.log").read_text()
