"""The node's own record of its sessions: `data_dir/sessions.json`.

For every session a user opened and has not closed: its `session.yaml`, its ID (kept across
restarts, so a client's session ID and credentials stay valid), and the digests of its
credentials (never a token: see perund/api/credentials.py). The node writes it atomically
whenever that changes and reads it at start to open those sessions again. It is node state, not
configuration (docs/architecture.md): the node writes it, mode 0600.

Format (version 2):

    {"version": 2, "sessions": [{"config": "/abs/session.yaml", "id": "<32 hex>",
                                 "credentials": [{"id", "scope", "label", "created", "sha256"}]}]}

Version 1 (`{"open_sessions": [paths]}`) is still read: those sessions get new IDs.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from twisted.logger import Logger

from perund.api.credentials import StoredCredential
from perund.storage.datafile import replace_file

log = Logger(namespace="perund.node")

SESSIONS_FILE = "sessions.json"
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class RememberedSession:
    """A session the node keeps open across restarts."""

    config: str
    """Its session.yaml, resolved."""
    session_id: str
    """Its ID, lower-case hex without 0x."""
    credentials: list[StoredCredential] = field(default_factory=list)


def new_session_id() -> str:
    """A fresh random session ID (16 bytes, hex)."""
    return os.urandom(16).hex()


def read_sessions(path: Path) -> list[RememberedSession]:
    """The sessions recorded in `path`; none (with an error logged) when it is unreadable, so
    a damaged file never stops the node from starting."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.error("cannot read {file}: {error}; no session is opened by itself",
                  file=str(path), error=exc)
        return []
    try:
        return _parse(raw)
    except ValueError as exc:
        log.error("{file} is damaged ({error}); no session is opened by itself",
                  file=str(path), error=exc)
        return []


def _parse(raw: object) -> list[RememberedSession]:
    if isinstance(raw, dict) and "open_sessions" in raw and "version" not in raw:
        paths = raw["open_sessions"]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ValueError("open_sessions is not a list of session files")
        return [RememberedSession(p, new_session_id()) for p in paths]
    if not isinstance(raw, dict) or raw.get("version") != 2:
        raise ValueError("not a version 2 sessions file")
    entries = raw.get("sessions")
    if not isinstance(entries, list):
        raise ValueError("sessions is not a list")
    sessions = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError("a session entry is not an object")
        config, session_id = entry.get("config"), entry.get("id")
        if not isinstance(config, str) or not isinstance(session_id, str) \
                or not _SESSION_ID.match(session_id):
            raise ValueError("a session entry needs a config path and a 32-hex-digit id")
        credentials = entry.get("credentials", [])
        if not isinstance(credentials, list):
            raise ValueError("credentials is not a list")
        sessions.append(RememberedSession(
            config, session_id,
            [StoredCredential.from_json(c, session_id) for c in credentials]))
    return sessions


def write_sessions(path: Path, sessions: list[RememberedSession]) -> None:
    """Replace `path` with `sessions` (atomically, fsynced, mode 0600); OSError if it fails."""
    document = {"version": 2, "sessions": [
        {"config": s.config, "id": s.session_id,
         "credentials": [c.to_json() for c in s.credentials]}
        for s in sorted(sessions, key=lambda s: s.config)]}
    replace_file(path, (json.dumps(document, indent=1) + "\n").encode())
