"""perund-cli's one-shot commands against a real daemon on anvil: output, --json, exit codes.

One node with two sessions (alice and bob). bob answers through `watch` and the `proposal` /
`update` commands; the long waits (opening, closing) show progress on stderr. Errors from the
node (unknown channel, bad amount, insufficient balance), an unreachable node and a wrong token
are one line on stderr and a distinct exit code.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pexpect
import pytest

from perund.chain.anvil import free_port
from perund.cli.generate import Generated
from tests.cli.conftest import CLI, cli_env
from tests.integration.daemons import Daemon


def run(env: dict[str, str], *args: str,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """perund-cli with `args`; what it printed and its exit code."""
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120,
                          input=stdin)


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """perund-cli with `args`, running in the background."""
    return subprocess.Popen([CLI, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def one_error(result: subprocess.CompletedProcess[str], code: int, pattern: str) -> None:
    """`result` failed with exit `code` and one `error: ...` line on stderr matching
    `pattern`, nothing on stdout."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert re.fullmatch(f"error: {pattern}\n", result.stderr), result.stderr


def next_push(watch: subprocess.Popen[str], kind: str) -> dict[str, Any]:
    """The next push of type `kind` (or a proposal) that `watch --json` prints."""
    assert watch.stdout is not None
    while True:
        line = watch.stdout.readline()
        assert line, "watch ended: " + (watch.stderr.read() if watch.stderr else "")
        push: dict[str, Any] = json.loads(line)
        if (kind == "proposal" and "proposalId" in push) or push.get("type") == kind:
            return push


@pytest.mark.anvil
@pytest.mark.slow
def test_one_shot_commands(one_daemon: Daemon, anvil_setup: Generated, tmp_path: Path) -> None:
    env = cli_env(one_daemon, tmp_path)
    files = {u.name: str(u.session_file) for u in anvil_setup.users}

    info = run(env, "node", "info")
    assert info.returncode == 0 and info.stderr == ""
    assert re.search(r"^chain\s+31337 \(http://127\.0\.0\.1:\d+\)$", info.stdout, re.M)
    assert json.loads(run(env, "--json", "node", "time").stdout) > 1_600_000_000
    assert "usage: perund-cli channel open" in run(env, "channel", "open", "--help").stdout

    alice = run(env, "session", "open", files["alice"], "-q").stdout.strip()
    assert re.fullmatch(r"0x[0-9a-f]{32}", alice)
    opened = json.loads(run(env, "session", "open", files["bob"], "--json").stdout)
    bob = opened["sessionId"]
    assert opened["restoredChannels"] == []
    again = run(env, "session", "open", files["alice"])
    assert again.returncode == 0 and "was open already: using it" in again.stdout
    # The same again with --token-out: nothing is written, and it says so.
    again = run(env, "session", "open", files["alice"], "--token-out", str(tmp_path / "a.tok"))
    assert again.returncode == 0 and "no credential was written" in again.stdout
    assert not (tmp_path / "a.tok").exists()
    # Another file of the same user (a copy with another password file) is not "used": the
    # open session came from another file, and this one was never read.
    copy = Path(files["alice"]).with_name("copy.yaml")
    wrong = copy.with_name("wrong-password")
    wrong.write_text("not alice's password\n")
    wrong.chmod(0o600)
    copy.write_text(Path(files["alice"]).read_text().replace("password_file: password",
                                                             "password_file: wrong-password"))
    other = run(env, "session", "open", str(copy))
    assert other.returncode == 1 and other.stdout == ""
    assert f"this user's session is open already (from {files['alice']})" in other.stderr
    assert f"{copy} was not opened" in other.stderr
    listed = run(env, "session", "list").stdout
    assert re.search(r"^SESSION\s+USER\s+FILE\s+OPEN CHANNELS\n", listed)
    for name, session in (("alice", alice), ("bob", bob)):
        assert re.search(rf"^{session}\s+{name}\s+{re.escape(files[name])}\s+0$", listed, re.M)
    a, b = dict(env, PERUND_SESSION=alice), dict(env, PERUND_SESSION=bob)
    assert run(a, "channel", "list").stdout == "no channels\n"
    assert re.search(r"^bob\s+0x[0-9a-fA-F]{40}\s+127\.0\.0\.1:\d+\s+tcp$",
                     run(a, "peer", "list").stdout, re.M)

    # Open: bob sees the proposal through `watch`; alice's wait shows progress meanwhile.
    watch = start(b, "watch", "--json")
    try:
        opening = start(a, "channel", "open", "bob", "--self", "1", "--peer", "0.5",
                        "--challenge-duration", "100s")
        proposal = next_push(watch, "proposal")
        assert proposal["peer"] == "alice"
        assert proposal["balances"] == {"ETH": {"self": "0.5", "peer": "1"}}
        assert opening.stderr is not None
        assert re.fullmatch(r"… opening a channel with bob: waiting for bob to accept the "
                            r"proposal \(\d+ s\)\n", opening.stderr.readline())
        accepted = run(b, "proposal", "accept", proposal["proposalId"])
        assert accepted.returncode == 0, accepted.stderr
        assert re.match(r"channel 0x[0-9a-f]{64} with alice is open: you 0\.5 ETH, alice 1 ETH",
                        accepted.stdout)
        out, err = opening.communicate(timeout=120)
        assert opening.returncode == 0, err
        channel = re.match(r"channel (0x[0-9a-f]{64}) with bob is open: you 1 ETH, bob 0\.5 ETH, "
                           r"challenge 1 min 40 s\n$", out)
        assert channel, out
        cid = channel.group(1)

        paid = run(a, "pay", cid[:8], "0.25")
        assert paid.returncode == 0 and paid.stderr == ""
        assert paid.stdout == f"paid 0.25 ETH to bob on channel {cid[:10]}…: you 0.75 ETH, " \
                              "bob 0.75 ETH (version 1)\n"
        assert json.loads(run(a, "--json", "pay", "bob", "0.25", "--reference",
                              "inv-7").stdout)["balances"] == \
            {"ETH": {"self": "0.5", "peer": "1"}}
        assert re.search(r"^balances\s+you 0\.5 ETH, bob 1 ETH$",
                         run(a, "channel", "info", "bob").stdout, re.M)

        # A request: pushed to bob, who accepts it by its IDs.
        asking = start(a, "request", "bob", "0.1")
        update = next_push(watch, "open")
        assert update["kind"] == "request" and update["channelId"] == cid
        answered = run(b, "update", "accept", cid, update["updateId"])
        assert answered.returncode == 0, answered.stderr
        out, err = asking.communicate(timeout=60)
        assert asking.returncode == 0, err
        assert out.startswith("bob paid your request of 0.1 ETH on channel")

        # Errors: one line on stderr, a distinct exit code.
        unknown = "0x" + "ab" * 32
        one_error(run(a, "channel", "info", unknown), 1, f"channel {unknown} not found \\(201\\)")
        one_error(run(a, "pay", "0xdead", "1"), 1, "channel 0xdead not found \\(201\\)")
        one_error(run(a, "pay", "bob", "1e3"), 1,
                  "invalid amount: must be a decimal amount .* \\(-32602\\)")
        one_error(run(a, "pay", "bob", "100"), 1,
                  r"insufficient balance: 100 ETH asked, 0\.6 ETH available \(203\)")
        one_error(run(a, "pay", "bob", "1", "--currency", "BTC"), 1,
                  r"invalid --currency: must be one of 'ETH' \(-32602\)")
        as_json = run(a, "--json", "pay", "bob", "0.1234567890123456789")
        assert as_json.returncode == 1 and as_json.stderr == ""
        error = json.loads(as_json.stdout)["error"]
        assert (error["kind"], error["code"], error["data"]["field"]) == \
            ("node", -32602, "payments[0].amount")
        down = dict(a, PERUND_NODE=f"127.0.0.1:{free_port()}")
        one_error(run(down, "channel", "list"), 3,
                  r"cannot reach the node at 127\.0\.0\.1:\d+: connection refused")
        assert json.loads(run(down, "--json", "node", "time").stdout)["error"]["kind"] == \
            "unreachable"
        one_error(run(dict(a, PERUND_TOKEN="x" * 43), "channel", "list"), 4,
                  r"the node at 127\.0\.0\.1:\d+ refused the API token .*")
        no_token = {k: v for k, v in a.items() if k != "PERUND_TOKEN_FILE"}
        one_error(run(no_token, "node", "time"), 4, "no API token: .*")
        one_error(run(env, "channel", "list"), 2, "no session: .*")
        one_error(run(env, "--session", "nope", "balance"), 2, "bad session ID 'nope': .*")
        usage = run(a, "channel", "open", "bob")
        assert usage.returncode == 2 and "the following arguments are required: --self" in \
            usage.stderr

        # Close: bob is pushed the final state; alice's wait shows what it waits for.
        closing = start(a, "channel", "close", cid[:12])
        final = next_push(watch, "final")
        assert final["channel"]["balances"] == {"ETH": {"self": "0.9", "peer": "0.6"}}
        assert closing.stderr is not None
        assert re.fullmatch(rf"… closing channel {cid[:10]}… with bob: waiting for bob to sign "
                            r"the final state \(a dispute at \d\d:\d\d:\d\d if bob stays "
                            r"unreachable\) \(\d+ s\)\n", closing.stderr.readline())
        assert run(b, "update", "accept", cid, final["updateId"]).returncode == 0
        assert next_push(watch, "closed")["channelId"] == cid
        out, err = closing.communicate(timeout=120)
        assert closing.returncode == 0, err
        assert out == f"channel {cid[:10]}… with bob is closed (by a final state both signed), " \
                      "paid out: you 0.6 ETH, bob 0.9 ETH\n"
    finally:
        watch.terminate()
        watch.wait(10)

    listed = json.loads(run(a, "--json", "channel", "list").stdout)
    assert [(c["channelId"], c["phase"]) for c in listed] == [(cid, "closed")]
    # Retired only after limits.closed_channel_retention (tests/node/test_sessions.py).
    assert run(a, "channel", "list", "--retired").stdout == "no channels\n"
    no_channels = run(a, "channel", "list", "--retired", "--limit", "0")
    assert no_channels.returncode == 2 and no_channels.stdout == ""
    assert "argument --limit: expected a whole number of at least 1, not '0'" in \
        no_channels.stderr
    balance = run(a, "balance")
    assert re.search(r"^ETH\s+9999\.\d+$", balance.stdout, re.M), balance.stdout

    # The history: every payment, on both sides, mirrored; a table, JSON, a CSV file.
    def payments(env: dict[str, str], *args: str) -> list[tuple[str, str, bool]]:
        shown = json.loads(run(env, "--json", "history", *args).stdout)
        return [(p["direction"], p["amount"], p["request"]) for p in shown]

    assert payments(a) == [("received", "0.1", True), ("sent", "0.25", False),
                           ("sent", "0.25", False)]
    assert payments(b) == [("sent", "0.1", True), ("received", "0.25", False),
                           ("received", "0.25", False)]
    references = [p["reference"] for p in json.loads(run(b, "--json", "history").stdout)]
    assert references == [None, "inv-7", None]
    assert payments(a, "--direction", "sent", "--limit", "1") == [("sent", "0.25", False)]
    assert payments(a, "--channel", cid[:8], "--peer", "bob", "--currency", "eth",
                    "--since", "2020-01-01") == payments(a)
    table = run(a, "history").stdout
    assert re.match(r"ID\s+TIME\s+AMOUNT\s+PEER\s+CHANNEL\s+VERSION\s+WHAT", table)
    assert re.search(r"^2\s+\S+ \S+\s+\+0\.1 ETH\s+bob\s+0x\S+\s+3\s+request$", table,
                     re.M), table
    exported = tmp_path / "alice.csv"
    assert run(a, "history", "--csv", str(exported)).stdout == \
        f"wrote 3 payments to {exported}\n"
    assert exported.stat().st_mode & 0o077 == 0  # the user's alone, as token files are
    with exported.open() as rows:
        read = list(csv.DictReader(rows))
    assert [(r["direction"], r["amount"], r["currency"]) for r in read] == [
        ("received", "0.1", "ETH"), ("sent", "0.25", "ETH"), ("sent", "0.25", "ETH")]
    one_error(run(a, "history", "--csv", str(exported)), 2,
              f"{re.escape(str(exported))} exists: give a new file name")
    one_error(run(a, "history", "--since", "last tuesday"), 2,
              "--since 'last tuesday': give a date .*")

    # Lines piped into the shell run one after the other.
    piped = run(env, stdin=f"use {alice}\nchannel list\nnode time --json\nexit\n")
    assert re.search(rf"^{cid[:10]}…\s+bob\s+closed", piped.stdout, re.M)
    assert "error: unrecognized arguments: --json" in piped.stdout
    # A script learns that a line failed: the exit code is the first failure's.
    assert piped.returncode == 2, piped.stderr
    assert run(env, stdin=f"use {alice}\nchannel list\n").returncode == 0

    # Colours only on a terminal, and not when refused.
    coloured = {k: v for k, v in a.items() if k != "NO_COLOR"}
    for extra, wanted in (({}, True), ({"NO_COLOR": "1"}, False), ({"TERM": "dumb"}, False)):
        tty = pexpect.spawn(CLI, ["channel", "list"], env=dict(coloured, **extra),
                            encoding="utf-8", timeout=60)
        tty.expect(pexpect.EOF)
        assert ("\x1b[1m" in (tty.before or "")) is wanted, (extra, tty.before)
    assert "\x1b[" not in run(coloured, "channel", "list").stdout

    closed = run(a, "session", "close")
    assert closed.returncode == 0 and closed.stdout == f"session {alice} is closed\n"
    one_error(run(a, "channel", "list"), 1, f"session {alice} not found \\(201\\)")


@pytest.mark.anvil
def test_session_credentials_from_the_cli(one_daemon: Daemon, anvil_setup: Generated,
                                          tmp_path: Path) -> None:
    """The operator opens the sessions and hands each user its own credential; a user's
    credential finds its session by itself and reaches nothing of the other user's."""
    operator = cli_env(one_daemon, tmp_path)
    files = {u.name: str(u.session_file) for u in anvil_setup.users}
    notes = tmp_path / "notes.txt"
    notes.write_text("not a token\n")
    refused = run(operator, "session", "open", files["alice"], "--token-out", str(notes))
    assert refused.returncode == 2 and "does not hold a token" in refused.stderr
    assert notes.read_text() == "not a token\n"
    assert run(operator, "session", "list").stdout == "no session is open on the node\n"

    alice_file = tmp_path / "alice.token"
    opened = run(operator, "session", "open", files["alice"], "--token-out", str(alice_file))
    assert opened.returncode == 0, opened.stderr
    assert f"written to {alice_file}" in opened.stdout
    assert alice_file.stat().st_mode & 0o777 == 0o600
    bob_session = json.loads(run(operator, "--json", "session", "open", files["bob"]).stdout)
    assert bob_session["token"].startswith("pdt_")

    alice = dict(operator, PERUND_TOKEN_FILE=str(alice_file))
    balance = run(alice, "balance")  # no --session: the credential's own
    assert balance.returncode == 0 and re.search(r"^ETH\s+\d", balance.stdout, re.M)
    listed = json.loads(run(alice, "--json", "session", "list").stdout)
    assert [s["configFile"] for s in listed] == [files["alice"]]
    one_error(run(alice, "--session", bob_session["sessionId"], "channel", "list"), 1,
              r"this credential belongs to another session \(501\)")
    one_error(run(alice, "session", "open", files["bob"]), 1,
              r"session_open needs the operator's token \(501\)")

    dashboard = tmp_path / "dashboard.token"
    minted = run(alice, "token", "create", "--read", "--label", "dashboard",
                 "--out", str(dashboard))
    assert minted.returncode == 0 and "minted read credential" in minted.stdout
    reader = dict(operator, PERUND_TOKEN_FILE=str(dashboard))
    assert run(reader, "channel", "list").stdout == "no channels\n"
    one_error(run(reader, "peer", "add", "carol", "0x" + "c0" * 20, "127.0.0.1:5003"), 1,
              r"session_addPeer needs a session credential; this one is read-only \(501\)")
    tokens = run(alice, "token", "list").stdout
    assert re.search(r"^0x[0-9a-f]{8}…?\S*\s+read\s+dashboard\s", tokens, re.M), tokens

    # Rotating replaces the token in its file; the old one is refused from then on.
    old = alice_file.read_text()
    rotated = run(alice, "token", "rotate", "--out", str(alice_file))
    assert rotated.returncode == 0, rotated.stderr
    assert alice_file.read_text() != old
    one_error(run(dict(operator, PERUND_TOKEN=old.strip()), "balance"), 4,
              r"the node at .* refused the API token.*")
    assert run(alice, "balance").returncode == 0

    dashboard_id = json.loads(run(alice, "--json", "token", "list").stdout)
    read_id = next(t["tokenId"] for t in dashboard_id if t["scope"] == "read")
    assert run(alice, "token", "revoke", read_id[:10]).returncode == 0
    one_error(run(reader, "channel", "list"), 4, r"the node at .* refused the API token.*")
