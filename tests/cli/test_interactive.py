"""The interactive perund-cli in a pseudo-terminal, against two real daemons on anvil.

alice and bob each run the shell on their own node. alice opens a channel and bob's shell shows
the pushed proposal, which he accepts; alice pays, requests a payment that bob accepts and one
he rejects (while he is typing a command: the push does not break his line), and closes; bob
accepts the final state and both see the channel closed and their on-chain balances.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pexpect
import pytest

from perund.cli.generate import Generated
from tests.cli.conftest import CLI, cli_env
from tests.integration.daemons import Daemon

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def shell(daemon: Daemon, tmp_path: Path, name: str) -> pexpect.spawn:
    """perund-cli's shell on `daemon`, in a pty 50x250, logging what it prints."""
    child = pexpect.spawn(CLI, env=cli_env(daemon, tmp_path), encoding="utf-8",
                          dimensions=(50, 250), timeout=90, cwd=str(tmp_path))
    child.logfile_read = (tmp_path / f"{name}-cli.log").open("w")
    return child


def on_chain(child: pexpect.spawn) -> Decimal:
    """The session's on-chain ETH balance, through the CLI's `balance` (Tab-completed)."""
    child.send("bal\t")
    child.expect("ance")  # the completion, drawn after the typed "bal"
    child.send("\r")
    child.expect(r"ETH\s+([0-9.]+)\r?\n")
    return Decimal(child.match.group(1))


def text_of(tmp_path: Path, name: str) -> str:
    """What a shell printed, without terminal control sequences."""
    return ANSI.sub("", (tmp_path / f"{name}-cli.log").read_text())


@pytest.mark.anvil
@pytest.mark.slow
def test_two_users_in_the_shell(two_daemons: tuple[Daemon, Daemon], anvil_setup: Generated,
                                tmp_path: Path) -> None:
    alice_node, bob_node = two_daemons
    files = {u.name: str(u.session_file) for u in anvil_setup.users}
    alice, bob = shell(alice_node, tmp_path, "alice"), shell(bob_node, tmp_path, "bob")
    try:
        for child, name in ((alice, "alice"), (bob, "bob")):
            child.expect(r"perund-cli: node 127\.0\.0\.1:\d+ \(perund .*, chain 31337\)")
            child.expect("perund>")
            child.sendline(f"session open {files[name]}")
            child.expect(rf"session (0x[0-9a-f]{{32}}) \({name}\) is open")
            # The last lines of its report. (The prompt, now "{name}>", may be drawn before the
            # report when the node is slow to answer: the shell does not wait for it.)
            child.expect(r"channels\s+none restored")
            child.expect(r"credential\s+this shell acts with the session's own credential")
        alice_start, bob_start = on_chain(alice), on_chain(bob)

        # Tab completes the peer's alias.
        alice.send("channel open b\t")
        alice.expect("ob")
        alice.sendline(" --self 1.5 --peer 0.5 --challenge-duration 2m")
        bob.expect(r"proposal 0x[0-9a-f]{8}… alice proposes a channel: you 0\.5 ETH, alice 1\.5 "
                   r"ETH, challenge 2 min; accept or reject within \d+ s")
        # alice's open waits for bob: it goes on in the background, its progress shown.
        alice.expect(r"… \[\d+\] opening a channel with bob: waiting for bob to accept the "
                     r"proposal \(\d+ s\)")
        bob.sendline("pending")
        bob.expect(r"proposal\s+0x[0-9a-f]{8}…\s+alice")
        bob.sendline("accept")
        alice.expect(r"channel (0x[0-9a-f]{64}) with bob is open: you 1\.5 ETH, bob 0\.5 ETH")
        channel = alice.match.group(1)
        bob.expect(rf"channel {channel} with alice is open: you 0\.5 ETH, alice 1\.5 ETH")

        alice.sendline("pay bob 0.5")
        alice.expect(r"paid 0\.5 ETH to bob on channel 0x[0-9a-f]{8}…: you 1 ETH, bob 1 ETH "
                     r"\(version 1\)")
        bob.expect(r"payment alice paid you 0\.5 ETH on channel 0x[0-9a-f]{8}…: you 1 ETH, "
                   r"alice 1 ETH \(version 1\)")

        # A request arrives while bob is typing: his half-typed line survives the push.
        bob.send("channel li")
        alice.sendline(f"request {channel[:8]} 0.25")
        bob.expect(r"update 0x[0-9a-f]{8}… alice requests 0\.25 ETH on channel "
                   r"0x[0-9a-f]{8}…: would leave you 0\.75 ETH, alice 1\.25 ETH")
        bob.sendline("st")
        bob.expect(r"CHANNEL\s+PEER\s+PHASE\s+VERSION\s+YOURS\s+PEER'S")
        bob.expect(rf"{channel[:10]}…\s+alice\s+\S+\s+1\s+1 ETH\s+1 ETH")
        bob.sendline("accept")
        alice.expect(r"bob paid your request of 0\.25 ETH on channel 0x[0-9a-f]{8}…: "
                     r"you 1\.25 ETH, bob 0\.75 ETH \(version 2\)")
        bob.expect(r"accepted update 0x[0-9a-f]{8}… on channel 0x[0-9a-f]{8}…: "
                   r"you 0\.75 ETH, alice 1\.25 ETH")

        alice.sendline("request bob 0.5")
        bob.expect(r"alice requests 0\.5 ETH")
        bob.sendline("reject")
        alice.expect(r"error: requesting 0\.5 ETH from bob: [^\r\n]*reject[^\r\n]* \(102\)")

        alice.sendline("channel close bob")
        bob.expect(r"update 0x[0-9a-f]{8}… alice wants to close channel 0x[0-9a-f]{8}… with "
                   r"the final balances you 0\.75 ETH, alice 1\.25 ETH")
        bob.sendline("accept")
        alice.expect(r"channel 0x[0-9a-f]{8}… with bob is closed \(by a final state both "
                     r"signed\), paid out: you 1\.25 ETH, bob 0\.75 ETH")
        bob.expect(r"closed channel 0x[0-9a-f]{8}… with alice: settled on-chain, paid out: "
                   r"you 0\.75 ETH, alice 1\.25 ETH")

        # Each got the channel's outcome on-chain, less what their transactions cost.
        alice_end, bob_end = on_chain(alice), on_chain(bob)
        gas = Decimal("0.01")
        assert alice_start - Decimal("0.25") - gas < alice_end < alice_start - Decimal("0.25")
        assert bob_start + Decimal("0.25") - gas < bob_end < bob_start + Decimal("0.25")

        alice.sendline("channel list")
        alice.expect(rf"{channel[:10]}…\s+bob\s+closed\s+\d+\s+1\.25 ETH\s+0\.75 ETH")

        # bob's node restarts and opens bob's session again by itself, under the same ID and
        # with bob's credential: his shell reconnects and goes on in it.
        bob_node.stop()
        bob.expect("the node's WebSocket closed: no pushes until it is back; reconnecting")
        bob_node.start()
        bob.expect("reconnected to the node's WebSocket")
        bob.sendline("channel list")
        bob.expect(rf"{channel[:10]}…\s+alice\s+closed")
        for child in (alice, bob):
            child.sendline("exit")
            child.expect("bye: the session stays open on the node")
            child.expect(pexpect.EOF)
    finally:
        for child in (alice, bob):
            child.close(force=True)
            child.logfile_read.close()
    history = (tmp_path / "state" / "perund" / "cli_history").read_text()
    assert "channel close bob" in history and "pay bob 0.5" in history
    assert "Traceback" not in text_of(tmp_path, "alice") + text_of(tmp_path, "bob")
