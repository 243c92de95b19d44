"""kill -9 of a node in the middle of a stream of payments (issue: sessions and the node).

Two node processes on one anvil, each with one session. One is killed with SIGKILL while
payments flow, then restarted: both must agree on the same latest state, and no payment that
either user was told succeeded may be lost; payments then continue.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from perund.cli.generate import Generated
from tests.node.conftest import two_nodes

PROCESS = Path(__file__).with_name("peer_process.py")
ETHER = 10**18


class NodeProcess:
    """One node process and everything it printed (read by a thread as it comes)."""

    def __init__(self, node_file: Path, session_file: Path,
                 seen: list[dict[str, Any]] | None = None) -> None:
        self.args = [sys.executable, str(PROCESS), str(node_file), str(session_file)]
        self.log = session_file.parent / "node-process.log"
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=sink, text=True,
                                         bufsize=1)
        self.seen: list[dict[str, Any]] = seen if seen is not None else []
        self._cursor = len(self.seen)
        self._lock = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                with self._lock:
                    self.seen.append(json.loads(line))
                    self._lock.notify_all()
        with self._lock:
            self._lock.notify_all()

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def next(self, event: str, timeout: float = 60.0) -> dict[str, Any]:
        """The next record called `event` after the last one returned."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                while self._cursor < len(self.seen):
                    record = self.seen[self._cursor]
                    self._cursor += 1
                    if record["event"] == event:
                        return record
                    if record["event"] == "failed":
                        raise AssertionError(f"node failed before {event}: {record['error']}")
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"node exited ({self.proc.returncode}) before {event}:\n"
                                         + self.log.read_text()[-3000:])
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {event} within {timeout} s")
                self._lock.wait(left)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._reader.join(10)  # everything printed before the kill has been read

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reader.join(10)

    def versions(self, event: str) -> list[int]:
        with self._lock:
            return [r["version"] for r in self.seen if r["event"] == event]


def agree(alice: NodeProcess, bob: NodeProcess, channel: str) -> dict[str, Any]:
    """Poll both nodes until they hold the same settled state; that state."""
    deadline = time.monotonic() + 30
    while True:
        alice.send(cmd="state", channel=channel)
        bob.send(cmd="state", channel=channel)
        a, b = alice.next("state"), bob.next("state")
        settled = not (a["needs_sync"] or b["needs_sync"] or a["staged"] or b["staged"])
        if settled and (a["version"], a["balances"]) == (b["version"], b["balances"]):
            return a
        if time.monotonic() > deadline:
            raise AssertionError(f"the nodes never agreed: {a} vs {b}")
        time.sleep(0.2)


@pytest.mark.anvil
@pytest.mark.parametrize("victim", ["payer", "payee"])
def test_kill_9_in_a_stream_of_payments(anvil_setup: Generated, victim: str) -> None:
    setup = anvil_setup
    users = {u.name: u for u in setup.users}
    configs = dict(zip(("alice", "bob"), two_nodes(setup), strict=True))
    alice = NodeProcess(configs["alice"], users["alice"].session_file)
    bob = NodeProcess(configs["bob"], users["bob"].session_file)
    try:
        alice.next("ready")
        bob.next("ready")
        alice.send(cmd="open", peer="bob", ours=10 * ETHER, theirs=ETHER)
        channel = alice.next("opened")["channel"]
        alice.send(cmd="pay", channel=channel, amount=1000, count=100_000)
        for _ in range(150):
            alice.next("paid")
        killed = alice if victim == "payer" else bob
        killed.kill()
        restarted = NodeProcess(Path(killed.args[2]), Path(killed.args[3]), killed.seen)
        if victim == "payer":
            alice = restarted
        else:
            bob = restarted
        assert restarted.next("ready")["restored"] == [channel]
        state = agree(alice, bob, channel)
        told_paid = max(alice.versions("paid"))
        told_received = max(bob.versions("received"))
        # Nothing either user was told is lost: the agreed version covers both.
        assert state["version"] >= told_paid and state["version"] >= told_received
        # Versions count payments, except that one abandoned in flight at the kill may be
        # skipped (its version is never signed again): at most one gap.
        paid_total = 10 * ETHER - int(state["balances"][0][0])
        assert state["balances"] == [[str(10 * ETHER - paid_total), str(ETHER + paid_total)]]
        assert paid_total % 1000 == 0
        assert state["version"] - 1 <= paid_total // 1000 <= state["version"]
        assert paid_total // 1000 >= len(set(alice.versions("paid")))
        # Each side's history is the sequence of its stored states: every payment to the
        # agreed state, once, in version order, and nothing beyond it.
        for side, direction in ((alice, "sent"), (bob, "received")):
            side.send(cmd="history", channel=channel)
            history = side.next("history")["payments"]
            versions = [p["version"] for p in history]
            assert versions == sorted(set(versions)) and versions[-1] == state["version"]
            assert {p["direction"] for p in history} == {direction}
            assert sum(int(p["amount"]) for p in history) == paid_total
        # The only error either user saw is the payment in flight when the payee died.
        errors = [r for r in alice.seen + bob.seen if r["event"] == "error"]
        assert len(errors) <= (1 if victim == "payee" else 0), errors
        # Payments continue.
        alice.send(cmd="pay", channel=channel, amount=1, count=3)
        versions = [alice.next("paid")["version"] for _ in range(3)]
        assert state["version"] < versions[0] < versions[1] < versions[2]
    finally:
        alice.stop()
        bob.stop()
