"""The node reads a user's files only where the operator allows, only small regular files, never
blocking on a pipe or a device, and never quotes what a file holds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from perund.errors import InvalidConfig
from perund.safe_files import MAX_FILE_SIZE, FileRules
from perund.session.config import load_session_config

MARKER = "ZQX-secret-marker-7731"
"""Written into files the node must not quote: an error that contains it quoted a file."""


@pytest.fixture
def layout(tmp_path: Path) -> tuple[FileRules, Path, Path]:
    """Rules allowing `sessions/`, forbidding `data/`; (rules, sessions, data)."""
    sessions, data, outside = tmp_path / "sessions", tmp_path / "data", tmp_path / "outside"
    for folder in (sessions, data, outside):
        folder.mkdir()
    return FileRules.within([sessions], forbidden=[data]), sessions, data


def refusal(rules: FileRules, path: Path, field: str = "configFile") -> str:
    with pytest.raises(InvalidConfig) as caught:
        rules.read(path, field)
    text = str(caught.value) + json.dumps(caught.value.to_data())
    assert MARKER not in text, text
    assert caught.value.data["name"] == field
    return caught.value.message


def test_an_allowed_small_file_is_read(layout: tuple[FileRules, Path, Path]) -> None:
    rules, sessions, _ = layout
    (sessions / "alice").mkdir()
    (sessions / "alice" / "session.yaml").write_text("a: 1\n")
    assert rules.read(sessions / "alice" / "session.yaml", "configFile") == b"a: 1\n"
    dotted = sessions / "alice" / ".." / "alice" / "session.yaml"
    assert rules.read(dotted, "configFile") == b"a: 1\n"


def test_a_new_path_that_cannot_be_resolved_is_refused_naming_the_field(
        layout: tuple[FileRules, Path, Path]) -> None:
    """A link loop (or a link swapped while it is resolved: found by an audit) is a refusal
    naming the field, not an internal error with a traceback."""
    rules, sessions, _ = layout
    loop = sessions / "db"
    loop.symlink_to(loop)
    with pytest.raises(InvalidConfig, match=r"database.*cannot resolve it") as caught:
        rules.resolve_new(loop, "database")
    assert caught.value.data["name"] == "database"


def test_places_outside_the_allowed_folders_are_refused(
        layout: tuple[FileRules, Path, Path], tmp_path: Path) -> None:
    rules, sessions, data = layout
    secret = tmp_path / "outside" / "secret"
    secret.write_text(MARKER)
    assert "outside the folders session files may come from (sessions.config_dirs)" in \
        refusal(rules, secret)
    assert "outside the folders" in refusal(rules, sessions / ".." / "outside" / "secret")
    link = sessions / "innocent.yaml"
    link.symlink_to(secret)  # a link inside pointing outside: judged where it leads
    assert "outside the folders" in refusal(rules, link)
    token = data / "api.token"
    token.write_text(MARKER)
    assert "the node's own data folder" in refusal(rules, token)
    nested = FileRules.within([tmp_path], forbidden=[data])  # data inside an allowed folder
    assert "the node's own data folder" in refusal(nested, token)
    assert "outside the folders" in refusal(rules, Path("/etc/passwd"))
    nowhere = FileRules.within([])
    (sessions / "ok.yaml").write_text("a: 1\n")
    assert "names none" in refusal(nowhere, sessions / "ok.yaml")


def test_devices_pipes_folders_and_big_files_are_refused_without_reading(
        layout: tuple[FileRules, Path, Path]) -> None:
    rules, sessions, _ = layout
    anywhere = FileRules()
    assert "not a regular file" in refusal(anywhere, Path("/dev/zero"))
    fifo = sessions / "pipe.yaml"
    os.mkfifo(fifo)  # nobody writes it: an open without O_NONBLOCK would hang for good
    assert "not a regular file" in refusal(rules, fifo)
    assert "a folder, not a file" in refusal(rules, sessions)
    sparse = sessions / "huge.yaml"
    with sparse.open("wb") as out:
        out.write(MARKER.encode())
        out.truncate(300 * 1024 * 1024)  # 300 MB, costs no disk
    assert f"larger than {MAX_FILE_SIZE // 1024} KiB" in refusal(rules, sparse)
    assert "no such file" in refusal(rules, sessions / "absent.yaml")
    loop = sessions / "loop.yaml"
    loop.symlink_to(loop)
    assert "cannot resolve it" in refusal(rules, loop)


def test_session_configs_quote_nothing_of_a_file_that_is_not_one(
        layout: tuple[FileRules, Path, Path]) -> None:
    rules, sessions, _ = layout
    passwd = sessions / "passwd"
    passwd.write_text(f"root:x:0:0:{MARKER}:/root:/bin/bash\n")
    keystore = sessions / "keystore.json"
    keystore.write_text(json.dumps({"address": MARKER, "crypto": {"ciphertext": MARKER},
                                    "version": 3}))
    password = sessions / "password"
    password.write_text(MARKER + "\n")
    broken = sessions / "broken.yaml"
    broken.write_text(f"on_chain: [{MARKER}\n  {MARKER}: '\n")
    binary = sessions / "binary.yaml"
    binary.write_bytes(b"\xff\xfe" + MARKER.encode())
    for path, expected in ((passwd, "not a mapping of keys"), (keystore, "unknown key"),
                           (password, "not a mapping of keys"), (broken, "not valid YAML"),
                           (binary, "not UTF-8 text")):
        with pytest.raises(InvalidConfig) as caught:
            load_session_config(path, rules)
        text = str(caught.value) + json.dumps(caught.value.to_data())
        assert MARKER not in text, (path.name, text)
        assert expected in text, (path.name, text)
        assert "\n" not in caught.value.message  # one line
    with pytest.raises(InvalidConfig, match=r"line 2, column \d+"):
        load_session_config(broken, rules)


def test_files_a_session_config_names_are_bound_by_the_same_rules(
        layout: tuple[FileRules, Path, Path], tmp_path: Path) -> None:
    rules, sessions, data = layout
    (sessions / "keys").mkdir()
    (sessions / "keys" / "on.json").write_text("{}")
    outside = tmp_path / "outside" / "off.json"
    outside.write_text("{}")
    config = sessions / "session.yaml"
    config.write_text(
        "on_chain: {address: '0x" + "11" * 20 + "', keystore: keys/on.json}\n"
        f"off_chain: {{address: '0x{'22' * 20}', keystore: {outside}}}\n"
        f"password_file: {data / 'api.token'}\n"
        "comm: {listen: 'tcp:5001'}\n"
        f"database: {data / 'db'}\n")
    (data / "api.token").write_text(MARKER)
    with pytest.raises(InvalidConfig) as caught:
        load_session_config(config, rules)
    problems = {p["name"]: p["requirement"] for p in caught.value.data["problems"]}
    assert "outside " + str(sessions.resolve()) + ", the folder" in problems["off_chain.keystore"]
    assert "data folder" in problems["password_file"]
    assert "data folder" in problems["database"]
    assert "on_chain.keystore" not in problems
    assert MARKER not in json.dumps(caught.value.to_data())


def test_a_session_config_names_files_of_its_own_users_folder_only(tmp_path: Path) -> None:
    """With a folder per user in sessions.config_dirs (as `perund generate` makes them), a user
    who may write her own folder cannot name another's keystore, password, contacts or store:
    she would open a session on their money (the isolation review's finding)."""
    alice, mallory = tmp_path / "users" / "alice", tmp_path / "users" / "mallory"
    for folder in (alice, mallory):
        folder.mkdir(parents=True)
    (alice / "on.json").write_text(MARKER)
    (alice / "password").write_text(MARKER)
    (alice / "contacts.yaml").write_text("[]\n")
    (mallory / "off.json").write_text("{}")
    rules = FileRules.within([alice, mallory])
    config = mallory / "session.yaml"
    config.write_text(
        "on_chain: {address: '0x" + "11" * 20 + "', keystore: ../alice/on.json}\n"
        f"off_chain: {{address: '0x{'22' * 20}', keystore: off.json}}\n"
        "password_file: ../alice/password\n"
        "contacts: ../alice/contacts.yaml\n"
        "comm: {listen: 'tcp:5001'}\n"
        "database: ../alice/db\n")
    with pytest.raises(InvalidConfig) as caught:
        load_session_config(config, rules)
    problems = {p["name"]: p["requirement"] for p in caught.value.data["problems"]}
    assert set(problems) == {"on_chain.keystore", "password_file", "contacts", "database"}
    for requirement in problems.values():
        assert f"outside {mallory.resolve()}, the folder of sessions.config_dirs" in requirement
    assert MARKER not in json.dumps(caught.value.to_data())


def test_a_sessions_folder_is_the_deepest_allowed_one_that_holds_its_config(
        tmp_path: Path) -> None:
    users, alice = tmp_path / "users", tmp_path / "users" / "alice"
    alice.mkdir(parents=True)
    rules = FileRules.within([users, alice])
    assert rules.for_session(alice / "session.yaml").allowed == (alice.resolve(),)
    assert rules.for_session(users / "bob.yaml").allowed == (users.resolve(),)
    assert rules.for_session(tmp_path / "elsewhere.yaml").allowed == ()
    assert FileRules().for_session(alice / "session.yaml") == FileRules()  # anywhere stays
