"""`perund generate`: the command, and what it writes opening as working sessions."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from perund.config import load_node_config
from perund.contacts.book import ContactBook, DictContactStore
from perund.session.config import load_session_config, unlock


def test_generate_command_writes_working_sessions(tmp_path: Path) -> None:
    target = tmp_path / "setup"
    run = subprocess.run([sys.executable, "-m", "perund.cli.main", "generate", str(target)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "twistd -n perund --config" in run.stdout
    node = load_node_config(target / "perund.yaml")
    assert node.chain.url == ""
    sessions = [load_session_config(target / name / "session.yaml") for name in ("alice", "bob")]
    for config, other in zip(sessions, reversed(sessions), strict=True):
        keys = unlock(config)
        assert keys.signer().address == config.off_chain.address
        assert keys.account().address == config.on_chain.address
        assert stat.S_IMODE(config.off_chain.keystore.stat().st_mode) == 0o600
        book = ContactBook.load(config.contacts, store=DictContactStore())
        assert book.knows(other.off_chain.address)
    again = subprocess.run([sys.executable, "-m", "perund.cli.main", "generate", str(target)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "exists" in again.stderr


def test_generate_any_number_of_users_who_all_know_each_other(tmp_path: Path) -> None:
    from perund.cli.generate import generate

    names = ("alice", "ingrid", "carol")
    written = generate(tmp_path / "setup", users=names, comm_ports=(6001, 6002, 6003))
    assert [user.name for user in written.users] == list(names)
    assert [user.comm_port for user in written.users] == [6001, 6002, 6003]
    node = load_node_config(written.node_config)
    assert [folder.name for folder in node.sessions.config_dirs] == list(names)
    configs = {user.name: load_session_config(user.session_file) for user in written.users}
    on_chain = {config.on_chain.address for config in configs.values()}
    assert len(on_chain) == 3  # one funded dev account each
    for name, config in configs.items():
        book = ContactBook.load(config.contacts, store=DictContactStore())
        others = [other for other in names if other != name]
        assert sorted(contact.alias for contact in book.list()) == sorted(others)
        for other in others:
            contact = book.by_alias(other)
            assert contact.off_chain_address == configs[other].off_chain.address
            assert contact.comm_address.endswith(f":{6001 + names.index(other)}")
        assert not book.knows(config.off_chain.address)


def test_generate_default_ports_are_consecutive(tmp_path: Path) -> None:
    from perund.cli.generate import FIRST_COMM_PORT, generate

    written = generate(tmp_path, users=("a", "b", "c", "d"))
    assert [u.comm_port for u in written.users] == [FIRST_COMM_PORT + i for i in range(4)]


@pytest.mark.parametrize(("users", "ports", "complaint"), [
    (("alice",), None, "2 to 9 users"),
    (tuple(f"u{i}" for i in range(10)), None, "2 to 9 users"),
    (("alice", "Alice"), None, "repeat"),
    (("alice", "self"), None, "reserved"),
    (("alice", "data"), None, "node's own"),
    (("alice", "../bob"), None, "user name"),
    (("alice", "0x" + "ab" * 20), None, "address"),
    (("alice", "bob"), (5000,), "one distinct TCP port"),
    (("alice", "bob"), (5000, 5000), "one distinct TCP port"),
    (("alice", "bob"), (5000, 70000), "one distinct TCP port"),
])
def test_generate_refuses_bad_users_and_writes_nothing(
        tmp_path: Path, users: tuple[str, ...], ports: tuple[int, ...] | None,
        complaint: str) -> None:
    from perund.cli.generate import generate
    from perund.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match=re.escape(complaint)):
        generate(tmp_path / "setup", users=users, comm_ports=ports)
    assert not (tmp_path / "setup").exists()


def test_generate_command_takes_users(tmp_path: Path) -> None:
    target = tmp_path / "setup"
    run = subprocess.run([sys.executable, "-m", "perund.cli.main", "generate", str(target),
                          "--users", "alice,ingrid,carol", "--comm-ports", "6101,6102,6103"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    for name in ("alice", "ingrid", "carol"):
        assert (target / name / "session.yaml").is_file()
        assert f"{name} " in run.stdout
    assert "peers on port 6102" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "perund.cli.main", "generate",
                          str(tmp_path / "other"), "--users", "alice,alice"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "repeat" in bad.stderr
    assert not (tmp_path / "other").exists()


def test_generate_into_a_place_it_cannot_write_or_with_a_bad_port_is_one_line(
        tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("in the way\n")
    for args, said in (([str(blocker / "setup")], f"cannot write {blocker / 'setup'}"),
                       ([str(tmp_path / "p"), "--api-port", "99999"],
                        "api.listen: port 99999 is not in 0..65535")):
        run = subprocess.run([sys.executable, "-m", "perund.cli.main", "generate", *args],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 1 and said in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
    assert not (tmp_path / "p").exists()


def test_comm_ports_are_one_argument_so_dir_may_follow_them(tmp_path: Path) -> None:
    """`--comm-ports 5751 5752 DIR` took DIR for a port; the ports are one comma-separated
    argument, like `--users`, so DIR may come after them."""
    target = tmp_path / "setup"
    run = subprocess.run([sys.executable, "-m", "perund.cli.main", "generate", "--comm-ports",
                          "6201,6202", str(target)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "peers on port 6202" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "perund.cli.main", "generate", "--comm-ports",
                          "6201,x", str(tmp_path / "other")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "comma-separated port numbers" in bad.stderr, bad.stderr
    assert not (tmp_path / "other").exists()
