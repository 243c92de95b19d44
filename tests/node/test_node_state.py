"""`data_dir/sessions.json` read back: what can be read is kept, a damaged file is moved aside
with a critical line, never lost (found by an audit: a damaged file lost every session and
credential for good, and their channels went unwatched)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from twisted.logger import LogLevel, capturedLogs, formatEvent

from perund.api.credentials import Credential, Scope, StoredCredential
from perund.node_state import RememberedSession, read_sessions, write_sessions

ALICE_ID, BOB_ID = "a1" * 16, "b0" * 16


def _credential(session_id: str, secret: str) -> StoredCredential:
    return StoredCredential(Credential("c" * 32, Scope.SESSION, session_id, "phone", 1.0),
                            hashlib.sha256(secret.encode()).digest())


def _written(tmp_path: Path) -> Path:
    path = tmp_path / "sessions.json"
    write_sessions(path, [
        RememberedSession("/users/alice/session.yaml", ALICE_ID,
                          [_credential(ALICE_ID, "alice-secret")]),
        RememberedSession("/users/bob/session.yaml", BOB_ID, [_credential(BOB_ID, "bob")]),
    ])
    return path


def _critical(events: list[dict[str, object]]) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_level") == LogLevel.critical]


def test_a_sound_file_is_read_whole_and_left_in_place(tmp_path: Path) -> None:
    path = _written(tmp_path)
    with capturedLogs() as events:
        sessions = read_sessions(path)
    assert [s.session_id for s in sessions] == [ALICE_ID, BOB_ID]
    assert _critical(events) == [] and path.exists()


def test_a_file_that_is_not_json_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    path.write_text('{"version": 2, "sessions": [', encoding="utf-8")
    with capturedLogs() as events:
        assert read_sessions(path) == []
    (line,) = _critical(events)
    (kept,) = tmp_path.glob("sessions.json.damaged-*")
    assert "it is not JSON" in line and str(kept) in line and not path.exists()
    assert kept.read_text(encoding="utf-8") == '{"version": 2, "sessions": ['


def test_one_bad_entry_leaves_the_others_and_the_file_is_kept(tmp_path: Path) -> None:
    path = _written(tmp_path)
    document = json.loads(path.read_text(encoding="utf-8"))
    document["sessions"][0]["credentials"][0]["sha256"] = "not hex"  # alice's credential
    document["sessions"].append({"config": 7, "id": "short"})  # a third, unreadable session
    path.write_text(json.dumps(document), encoding="utf-8")
    with capturedLogs() as events:
        sessions = read_sessions(path)
    assert [(s.session_id, len(s.credentials)) for s in sessions] == [(ALICE_ID, 0), (BOB_ID, 1)]
    (line,) = _critical(events)
    assert "2 sessions are opened" in line and f"a credential of session {ALICE_ID}" in line
    assert "session entry 2" in line
    assert len(list(tmp_path.glob("sessions.json.damaged-*"))) == 1
    assert "alice-secret" not in line


def test_one_session_read_is_said_in_the_singular(tmp_path: Path) -> None:
    path = _written(tmp_path)
    document = json.loads(path.read_text(encoding="utf-8"))
    document["sessions"][1] = {"config": 7, "id": "short"}  # bob's entry is unreadable
    path.write_text(json.dumps(document), encoding="utf-8")
    with capturedLogs() as events:
        sessions = read_sessions(path)
    assert [s.session_id for s in sessions] == [ALICE_ID]
    (line,) = _critical(events)
    assert "; 1 session is opened from what could be read" in line, line
    assert [e["count"] for e in events if e.get("log_level") == LogLevel.critical] == [1]
