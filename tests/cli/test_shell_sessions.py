"""The interactive perund-cli when its session changes under it, against real daemons on anvil:
another client closes the session; the node restarts after the session's channel settled
through a dispute while the node was down (two findings of an operator audit)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from perund.chain.anvil import Anvil
from perund.cli.generate import Generated
from tests.cli.conftest import CLI, cli_env
from tests.cli.test_interactive import shell, text_of
from tests.integration.daemons import Daemon, assert_clean_log
from tests.integration.onchain import until
from tests.integration.pair import CHALLENGE, World


@pytest.mark.anvil
@pytest.mark.slow
def test_a_shell_whose_session_another_client_closes_says_so_once(
        one_daemon: Daemon, anvil_setup: Generated, tmp_path: Path) -> None:
    files = {u.name: str(u.session_file) for u in anvil_setup.users}
    mine, other = shell(one_daemon, tmp_path, "mine"), shell(one_daemon, tmp_path, "other")
    try:
        mine.expect("perund>")
        for name in ("alice", "bob"):
            # The last opened is current, with its own credential.
            mine.sendline(f"session open {files[name]}")
            mine.expect(rf"session 0x[0-9a-f]{{32}} \({name}\) is open")
            mine.expect(r"credential\s+this shell acts with the session's own credential")
        # A call that waits on the session when it closes: alice never answers.
        mine.sendline("channel open alice --self 1 --peer 0")
        mine.expect(r"opening a channel with alice: in the background")
        other.expect("perund>")
        other.sendline(f"session open {files['bob']}")
        other.expect(r"session (0x[0-9a-f]{32}) \(bob\) was open already: using it")
        session = other.match.group(1)
        other.sendline("session close --force")
        other.expect(rf"session {session} is closed")
        mine.expect(rf"session {session} \(bob\) was closed by another client: its pushes and "
                    rf"calls end here\. `session open {files['bob']}` opens it again")
        mine.expect(rf"opening a channel with alice: ended with session {session}, which was "
                    "closed meanwhile")
        # The shell left it, went back to its own credential, and can open it again.
        mine.sendline(f"session open {files['bob']}")
        mine.expect(r"session 0x[0-9a-f]{32} \(bob\) is open")
        mine.sendline("balance")
        mine.expect(r"on-chain account 0x[0-9a-fA-F]{40}")
        for child in (mine, other):
            child.sendline("exit")
            child.expect("bye")
            child.expect(pexpect.EOF)
    finally:
        for child in (mine, other):
            child.close(force=True)
            child.logfile_read.close()
    seen = text_of(tmp_path, "mine")
    # Nothing that reads as the node's failure or a credential revoked for its own sake; said
    # once (two subscriptions, one line).
    for misleading in ("revoked", "refused the API token", "node stopped", "error:",
                       "Traceback"):
        assert misleading not in seen, seen
    assert seen.count("was closed by another client") == 1, seen
    other_seen = text_of(tmp_path, "other")
    assert "by another client" not in other_seen and "stays open" not in other_seen, other_seen


@pytest.fixture
def world(anvil_setup: Generated, tmp_path: Path, anvil: Anvil) -> Iterator[World]:
    w = World(anvil_setup, tmp_path, anvil)
    try:
        yield w
    finally:
        w.close()
    for daemon in w.daemons.values():
        assert_clean_log(daemon)


@pytest.mark.anvil
@pytest.mark.slow
def test_a_shell_on_a_reopened_session_is_told_how_its_disputed_channel_ended(
        world: World, tmp_path: Path) -> None:
    """alice forces a close and her node stops while the dispute runs, nobody listening; bob's
    node concludes it meanwhile. Her shell on the restarted node is told the outcome once, not
    the dispute that is over (nor only that)."""
    w = world
    cid = w.open_channel("1", "1")
    w.pay("alice", cid, "0.25")
    w.background(w.request, "alice", "channel_close", channelId=cid, force=True)
    until(lambda: w.phase("alice", cid) == "disputed", "alice's registration", 60)
    w.alice.stop()
    w.travel(CHALLENGE + 1)
    until(lambda: w.phase("bob", cid) == "closed", "bob's node concluding", 90)
    w.restart("alice")
    child = pexpect.spawn(CLI, env=cli_env(w.alice, tmp_path), encoding="utf-8",
                          dimensions=(50, 250), timeout=60, cwd=str(tmp_path))
    child.logfile_read = (tmp_path / "alice-cli.log").open("w")
    try:
        child.expect("perund>")
        child.sendline(f"use {w.sessions['alice']}")
        child.expect(rf"closed channel {cid[:10]}… with bob: settled on-chain, paid out: you "
                     r"0\.75 ETH, bob 1\.25 ETH")
        child.sendline("channel list")
        child.expect(rf"{cid[:10]}…\s+bob\s+closed")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
        child.logfile_read.close()
    seen = text_of(tmp_path, "alice")
    assert "disputed" not in seen, seen
    assert seen.count("closed channel") == 1, seen
