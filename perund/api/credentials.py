"""API credentials: the operator's token and per-session tokens with scopes (docs/security.md).

Three kinds of caller, in the spirit of lnd's macaroons but as plain bearer tokens, which is what
a JSON-RPC client can send on every transport:

- the **operator**, with the token of the node's token file: every method, every session;
- a **session** credential, returned by `session_open` (and minted by
  `session_createToken`): every method on that one session, and the node's read-only methods;
- a **read** credential of a session (minted by `session_createToken`): that session's read
  methods and pushes, nothing that moves money or answers a peer.

A session token is `pdt_<id>_<secret>`: 16 random bytes of ID (hex) and 32 of secret
(URL-safe base64). The node keeps only the SHA-256 of the secret, so a copy of its state file
grants nothing; the check looks the ID up and compares digests in constant time. Nothing here
logs a token.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Final

from twisted.internet.defer import Deferred, succeed

from perund.errors import FailedPrecondition, InvalidArgument, ResourceNotFound, Unauthorized
from perund.ratelimit import Allowances

TOKEN_PREFIX: Final = "pdt_"
_ID_HEX: Final = 32
_SECRET_CHARS: Final = 43  # token_urlsafe(32)
_TOKEN_LENGTH: Final = len(TOKEN_PREFIX) + _ID_HEX + 1 + _SECRET_CHARS
MAX_LABEL: Final = 64
MAX_PER_SESSION: Final = 32
"""Credentials one session may hold at once: minting is cheap, the node's state file is not."""
DEFAULT_CHANGES_PER_SECOND: Final = 4
"""Credential changes (mints, revocations) a session may make a second (limits.
api_credential_changes), after a burst of CHANGES_BURST."""
CHANGES_BURST: Final = 2 * MAX_PER_SESSION
"""Enough to replace every credential of a session at once (a mint and a revocation each)."""
CHANGES_KEPT: Final = 4096
"""Sessions whose allowance of changes is remembered at most."""
OPERATOR_ID: Final = "operator"
CLOSE_REVOKED: Final = 4401
"""WebSocket close code when the connection's credential ends (4000-4999: the application's)."""


class Scope(enum.Enum):
    """What a credential may do."""

    OPERATOR = "operator"
    SESSION = "session"
    READ = "read"


class Access(enum.Enum):
    """Who may call a method (its `Method.access`)."""

    ANYONE = "anyone"
    """Node-wide reads (`node_time`, `rpc.discover`, ...): any valid credential."""
    OPERATOR = "operator"
    """Node administration (`session_open`): the operator's token only."""
    SESSION_READ = "session-read"
    """Reads of one session: its session or read credential, or the operator."""
    SESSION = "session"
    """Everything else on one session (payments, answers, closes, contacts, credentials): its
    session credential, or the operator."""


@dataclass(frozen=True, slots=True)
class Credential:
    """An authenticated caller: which credential, its scope and, unless it is the operator,
    the one session (hex ID) it belongs to."""

    id: str
    scope: Scope
    session_id: str | None = None
    label: str = ""
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The API's view of it (never the secret, which the node does not have)."""
        return {"tokenId": "0x" + self.id, "scope": self.scope.value, "label": self.label,
                "created": self.created}


OPERATOR: Final = Credential(OPERATOR_ID, Scope.OPERATOR)


def party_of(credential: Credential | None) -> str:
    """Whose calls `credential` makes, for limits shared by every credential of one party: the
    session's hex ID, `operator`, or `-` for no credential."""
    if credential is None:
        return "-"
    return credential.session_id or "operator"


def session_of(args: Mapping[str, Any]) -> str | None:
    """The session (lower-case hex, no 0x) a call's params name, if any."""
    named = args.get("sessionId")
    return named[2:].lower() if isinstance(named, str) else None


def authorize_method(access: Access, credential: Credential | None, method: str) -> None:
    """Raise Unauthorized if `credential` may never call a method of `access`, whatever its
    params (checked before the params are read)."""
    if credential is None:
        raise Unauthorized("no valid credential", method=method,
                           requirement="a valid credential")
    if access is Access.OPERATOR and credential.scope is not Scope.OPERATOR:
        raise Unauthorized(f"{method} needs the operator's token", method=method,
                           scope=credential.scope.value, requirement="the operator's token")
    if access is Access.SESSION and credential.scope is Scope.READ:
        raise Unauthorized(f"{method} needs a session credential; this one is read-only",
                           method=method, scope=credential.scope.value,
                           requirement="a session credential")


def authorize_session(access: Access, credential: Credential, args: Mapping[str, Any],
                      method: str) -> None:
    """Raise Unauthorized unless the session `args` name is the credential's own (for the
    session levels; the dispatcher's schema makes `sessionId` required there)."""
    if credential.scope is Scope.OPERATOR or access in (Access.ANYONE, Access.OPERATOR):
        return
    if session_of(args) != credential.session_id:
        # The same answer whether or not that session exists: a credential learns nothing of
        # other users.
        raise Unauthorized("this credential belongs to another session", method=method,
                           scope=credential.scope.value,
                           requirement="a credential of the session named by sessionId")


@dataclass(frozen=True, slots=True)
class StoredCredential:
    """What the node keeps of a session credential: never the secret, only its digest."""

    credential: Credential
    digest: bytes

    def to_json(self) -> dict[str, Any]:
        """The record in the node's state file."""
        c = self.credential
        return {"id": c.id, "scope": c.scope.value, "label": c.label, "created": c.created,
                "sha256": self.digest.hex()}

    @classmethod
    def from_json(cls, raw: object, session_id: str) -> StoredCredential:
        """Read a record back; ValueError for anything malformed."""
        if not isinstance(raw, dict):
            raise ValueError("a credential record is an object")
        cred_id, scope, digest = raw.get("id"), raw.get("scope"), raw.get("sha256")
        if not (isinstance(cred_id, str) and len(cred_id) == _ID_HEX and _is_hex(cred_id)):
            raise ValueError("a credential id is 32 hex digits")
        if scope not in (Scope.SESSION.value, Scope.READ.value):
            raise ValueError("a stored credential's scope is session or read")
        if not (isinstance(digest, str) and len(digest) == 64 and _is_hex(digest)):
            raise ValueError("a credential digest is 64 hex digits")
        label, created = raw.get("label", ""), raw.get("created", 0.0)
        if not isinstance(label, str) or not isinstance(created, int | float):
            raise ValueError("a credential label is text and its creation time a number")
        return cls(Credential(cred_id, Scope(scope), session_id, label[:MAX_LABEL],
                              float(created)), bytes.fromhex(digest))


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


class CredentialRegistry:
    """Every live credential of the node: authenticates tokens, mints and revokes them.

    `on_change` is called after every change (the node saves its state file there), `saved`
    gives a Deferred that fires once every change so far is on disk (the credential methods
    answer only then), and revocation listeners learn which credentials ended (a WebSocket
    authenticated with one is closed). A session's credentials change (`issue`, `revoke`) at
    most `changes_per_second` times a second after a burst of `CHANGES_BURST`; beyond that
    FailedPrecondition naming limits.api_credential_changes. Each change rewrites the node's
    state file: without a bound any credential, even a read-only one rotating itself, could
    keep the disk busy for every user.
    """

    def __init__(self, operator_token: str, *, clock: Callable[[], float],
                 stored: Iterable[StoredCredential] = (),
                 on_change: Callable[[], None] | None = None,
                 saved: Callable[[], Deferred[None]] | None = None,
                 changes_per_second: float = DEFAULT_CHANGES_PER_SECOND) -> None:
        if changes_per_second <= 0:
            raise ValueError("changes_per_second must be positive")
        self._operator = operator_token.encode("utf-8")
        self._clock = clock
        self._records: dict[str, StoredCredential] = {s.credential.id: s for s in stored}
        self.on_change = on_change
        self._saved = saved
        self._revoked_listeners: list[Callable[[Credential], None]] = []
        self.changes_per_second = changes_per_second
        self._changes = Allowances(SimpleNamespace(seconds=clock), changes_per_second,
                                   CHANGES_BURST, CHANGES_KEPT)
        """Per session: the changes it may still make."""

    # -- checking ------------------------------------------------------------------------------

    def authenticate(self, offered: bytes | str | None) -> Credential | None:
        """The credential `offered` proves, or None."""
        if offered is None:
            return None
        raw = offered.encode("utf-8", "replace") if isinstance(offered, str) else offered
        if hmac.compare_digest(self._operator, raw):
            return OPERATOR
        if len(raw) == _TOKEN_LENGTH and raw.startswith(TOKEN_PREFIX.encode()):
            return self._session_credential(raw.decode("ascii", "replace"))
        return None

    def _session_credential(self, token: str) -> Credential | None:
        if token[len(TOKEN_PREFIX) + _ID_HEX] != "_":
            return None
        cred_id = token[len(TOKEN_PREFIX):len(TOKEN_PREFIX) + _ID_HEX]
        secret = token[len(TOKEN_PREFIX) + _ID_HEX + 1:]
        record = self._records.get(cred_id)
        # The digest is compared even for an unknown ID, so the time taken tells nothing.
        expected = record.digest if record is not None else bytes(32)
        matches = hmac.compare_digest(expected, _digest(secret))
        return record.credential if record is not None and matches else None

    def is_live(self, credential: Credential) -> bool:
        """Whether `credential` is still valid (the operator's always is)."""
        return credential.scope is Scope.OPERATOR or credential.id in self._records

    # -- minting and revoking ------------------------------------------------------------------

    def issue(self, session_id: str, scope: Scope, label: str = "") -> tuple[Credential, str]:
        """A new credential of `session_id` (hex) and the token proving it; the token exists
        only in the return value."""
        if scope is Scope.OPERATOR:
            raise InvalidArgument("the operator's credential is the token file", name="scope",
                                  value=scope.value, requirement="session or read")
        self._spend_change(session_id)
        if len(self.of_session(session_id)) >= MAX_PER_SESSION:
            raise InvalidArgument(
                f"the session holds {MAX_PER_SESSION} credentials already: revoke one first",
                name="scope", value=scope.value, requirement="fewer live credentials")
        cred_id = os.urandom(_ID_HEX // 2).hex()
        secret = secrets.token_urlsafe(32)
        credential = Credential(cred_id, scope, session_id, label[:MAX_LABEL], self._clock())
        self._records[cred_id] = StoredCredential(credential, _digest(secret))
        self._changed()
        return credential, f"{TOKEN_PREFIX}{cred_id}_{secret}"

    def revoke(self, session_id: str, cred_id: str) -> Credential:
        """End one credential of `session_id`; ResourceNotFound if it has no such one."""
        record = self._records.get(cred_id)
        if record is None or record.credential.session_id != session_id:
            raise ResourceNotFound("no such credential", type="token", id="0x" + cred_id)
        self._spend_change(session_id)
        del self._records[cred_id]
        self._changed()
        self._tell_revoked([record.credential])
        return record.credential

    def revoke_session(self, session_id: str) -> list[Credential]:
        """End every credential of a session (it was closed)."""
        ended = [r.credential for r in self._records.values()
                 if r.credential.session_id == session_id]
        for credential in ended:
            del self._records[credential.id]
        if ended:
            self._changed()
            self._tell_revoked(ended)
        return ended

    def of_session(self, session_id: str) -> list[Credential]:
        """The live credentials of a session, oldest first."""
        return sorted((r.credential for r in self._records.values()
                       if r.credential.session_id == session_id), key=lambda c: c.created)

    def stored(self, session_id: str) -> list[StoredCredential]:
        """What the node persists for a session (digests only)."""
        return [r for r in self._records.values() if r.credential.session_id == session_id]

    def on_revoked(self, listener: Callable[[Credential], None]) -> Callable[[], None]:
        """Call `listener` with every credential that ends; returns the remover."""
        self._revoked_listeners.append(listener)

        def remove() -> None:
            if listener in self._revoked_listeners:
                self._revoked_listeners.remove(listener)

        return remove

    def saved(self) -> Deferred[None]:
        """Fires once every change made so far is on disk (at once without a state file);
        errback OSError if it could not be written."""
        return self._saved() if self._saved is not None else succeed(None)

    def may_change(self, session_id: str, changes: int = 1) -> None:
        """FailedPrecondition unless `session_id` may make `changes` more credential changes
        now (limits.api_credential_changes); nothing is spent."""
        allowance = self._changes.of(session_id)
        if allowance.available() < changes:
            wait = max(allowance.seconds_until(changes), 0.1)
            raise FailedPrecondition(
                f"this session changes its credentials faster than {self.changes_per_second:g} "
                f"times a second (limits.api_credential_changes): try again in {wait:.1f} s",
                limit=self.changes_per_second, retryAfter=round(wait, 1))

    def _spend_change(self, session_id: str) -> None:
        self.may_change(session_id)
        self._changes.of(session_id).spend(1)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _tell_revoked(self, ended: list[Credential]) -> None:
        for credential in ended:
            for listener in list(self._revoked_listeners):
                listener(credential)

