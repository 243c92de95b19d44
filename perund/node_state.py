"""The node's own record of its sessions: `data_dir/sessions.json`.

For every session a user opened and has not closed: its `session.yaml`, its ID (kept across
restarts, so a client's session ID and credentials stay valid), the digests of its
credentials (never a token: see perund/api/credentials.py), and the peer address it last
listened on (its claim on that port: perund/session_claims.py). The node writes it atomically
whenever that changes and reads it at start to open those sessions again. It is node state, not
configuration (docs/architecture.md): the node writes it, mode 0600.

Format (version 2):

    {"version": 2, "sessions": [{"config": "/abs/session.yaml", "id": "<32 hex>",
                                 "credentials": [{"id", "scope", "label", "created", "sha256"}],
                                 "listen": "tcp:5001:interface=127.0.0.1"}]}

`listen` is absent for a session recorded before the node kept it (and for one never opened
since): such a session claims its port when it next opens.

Version 1 (`{"open_sessions": [paths]}`) is still read: those sessions get new IDs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from perund.api.credentials import StoredCredential
from perund.listen_address import ListenAddress, parse_listen_address
from perund.storage.datafile import replace_file
from perund.words import plural

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
    listen: ListenAddress | None = None
    """The peer address it listened on when it was last open: the port is its own, no other
    session of the node may take it (perund/session_claims.py)."""


def new_session_id() -> str:
    """A fresh random session ID (16 bytes, hex)."""
    return os.urandom(16).hex()


def read_sessions(path: Path) -> list[RememberedSession]:
    """The sessions recorded in `path`, so that a damaged file never stops the node from
    starting and never loses what can still be read: an entry (a session, or one of its
    credentials) that cannot be read is left out, the others are kept, and the file as it was
    is moved aside (`sessions.json.damaged-<time>`) with a critical line saying so, before the
    node's next change of its sessions writes the file anew."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.critical("cannot read {file} ({error}); no session is opened by itself",
                     file=str(path), error=exc.strerror or exc)
        return []
    problems: list[str] = []
    try:
        raw = json.loads(text.decode("utf-8"))
    except ValueError:  # not UTF-8, or not JSON (a torn write of another tool, a bad edit)
        raw, problems = None, ["it is not JSON"]
    sessions = []
    if not problems:
        try:
            sessions = _parse(raw, problems)
        except ValueError as exc:  # JSON, but no sessions file at all
            problems = [str(exc)]
    if problems:
        kept = _keep_aside(path)
        log.critical(
            "{file} is damaged ({problems}); {opened} from what could be "
            "read, the rest not: the file as it was is kept as {kept} (the sessions left out "
            "can be opened again with session_open, with new credentials)",
            file=str(path), problems="; ".join(problems[:5]), count=len(sessions),
            opened=plural(len(sessions), "session is opened", "sessions are opened"),
            kept=kept or "nothing (it could not be moved)")
    return sessions


def _keep_aside(path: Path) -> str | None:
    """Move damaged `path` beside itself under a name of its own; the new name, or None."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = path.with_name(f"{path.name}.damaged-{stamp}")
    try:
        os.replace(path, kept)
    except OSError:
        return None
    return str(kept)


def _parse(raw: object, problems: list[str]) -> list[RememberedSession]:
    """The sessions of a decoded file; what cannot be read goes to `problems` (ValueError for
    a document that is no sessions file at all)."""
    if isinstance(raw, dict) and "open_sessions" in raw and "version" not in raw:
        paths = raw["open_sessions"]
        if not isinstance(paths, list):
            raise ValueError("open_sessions is not a list of session files")
        problems.extend("an entry of open_sessions is not a path"
                        for p in paths if not isinstance(p, str))
        return [RememberedSession(p, new_session_id()) for p in paths if isinstance(p, str)]
    if not isinstance(raw, dict) or raw.get("version") != 2:
        raise ValueError("not a version 2 sessions file")
    entries = raw.get("sessions")
    if not isinstance(entries, list):
        raise ValueError("sessions is not a list")
    sessions = []
    for number, entry in enumerate(entries):
        config = entry.get("config") if isinstance(entry, dict) else None
        session_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(config, str) or not isinstance(session_id, str) \
                or not _SESSION_ID.match(session_id):
            problems.append(f"session entry {number} needs a config path and a 32-hex-digit id")
            continue
        assert isinstance(entry, dict)
        credentials = entry.get("credentials", [])
        if not isinstance(credentials, list):
            problems.append(f"the credentials of session {session_id} are not a list")
            credentials = []
        kept = []
        for raw_credential in credentials:
            try:
                kept.append(StoredCredential.from_json(raw_credential, session_id))
            except ValueError as exc:
                problems.append(f"a credential of session {session_id}: {exc}")
        listen: ListenAddress | None = None
        if entry.get("listen") is not None:
            try:
                listen = parse_listen_address(entry["listen"])
            except ValueError:
                problems.append(f"the listen address of session {session_id} cannot be read")
        sessions.append(RememberedSession(config, session_id, kept, listen))
    return sessions


def encode_sessions(sessions: list[RememberedSession]) -> bytes:
    """The content of a sessions file recording `sessions`."""
    document = {"version": 2, "sessions": [
        {"config": s.config, "id": s.session_id,
         "credentials": [c.to_json() for c in s.credentials],
         **({} if s.listen is None else {"listen": str(s.listen)})}
        for s in sorted(sessions, key=lambda s: s.config)]}
    return (json.dumps(document, indent=1) + "\n").encode()


def write_sessions(path: Path, sessions: list[RememberedSession]) -> None:
    """Replace `path` with `sessions` (atomically, fsynced, mode 0600); OSError if it fails."""
    replace_file(path, encode_sessions(sessions))


class SessionsWriter:
    """Writes the sessions file on a thread (`run`, the fsync thread), never on the reactor:
    a write and its two fsyncs took the reactor ~2 ms, and any credential could ask for
    hundreds a second (an audit: another user's median latency went from 2 to 50 ms).

    `save` takes the new content at once (on the reactor, so it is consistent); the writes are
    grouped: while one runs, every change waits for one more write that holds them all.
    `durable()` fires once what was saved so far is on disk (errback OSError if that write
    failed), so a reply can wait for it: a revocation is never answered before it would
    survive a crash."""

    def __init__(self, path: Path,
                 run: Callable[[Callable[[], float]], Deferred[float]]) -> None:
        self.path = path
        self._run = run
        self._pending: bytes | None = None
        """Content saved since the running write took its own."""
        self._writing: Deferred[float] | None = None
        self._after_running: list[Deferred[None]] = []
        """Waiting for the running write."""
        self._after_pending: list[Deferred[None]] = []
        """Waiting for the write of `_pending`."""
        self._last_error: OSError | None = None
        self.writes = 0
        """Writes started (for tests)."""

    def save(self, sessions: list[RememberedSession]) -> None:
        """Record `sessions` with the next write (started now if none runs)."""
        self._pending = encode_sessions(sessions)
        if self._writing is None:
            self._start()

    def durable(self) -> Deferred[None]:
        """Fires once everything saved so far is on disk; errback OSError if it failed."""
        waiter: Deferred[None] = Deferred()
        if self._pending is not None:
            self._after_pending.append(waiter)
        elif self._writing is not None:
            self._after_running.append(waiter)
        elif self._last_error is not None:
            waiter.errback(self._last_error)
        else:
            waiter.callback(None)
        return waiter

    async def settled(self) -> None:
        """Wait until what was saved so far is written, or failed to be (that is logged)."""
        with contextlib.suppress(OSError):
            await self.durable()

    def _start(self) -> None:
        data, self._pending = self._pending, None
        assert data is not None
        self._after_running, self._after_pending = self._after_pending, []
        self.writes += 1
        path = self.path

        def write() -> float:
            replace_file(path, data)
            return 0.0

        self._writing = self._run(write)
        self._writing.addCallbacks(self._written, self._not_written)

    def _written(self, _: float) -> None:
        self._finish(None)

    def _not_written(self, failure: Failure) -> None:
        error = failure.value
        if not isinstance(error, OSError):
            error = OSError(str(error))
        log.error("cannot record the open sessions in {file}: {error}; they will not be opened "
                  "again by themselves after a restart, and credentials minted since the last "
                  "write end with it", file=str(self.path), error=error)
        self._finish(error)

    def _finish(self, error: OSError | None) -> None:
        self._writing = None
        self._last_error = error
        waiting, self._after_running = self._after_running, []
        if self._pending is not None:
            self._start()
        for waiter in waiting:
            if error is None:
                waiter.callback(None)
            else:
                waiter.errback(error)
