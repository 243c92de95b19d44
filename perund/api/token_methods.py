"""The API methods that manage a session's credentials: create, list, revoke, rotate.

A session credential may mint further credentials of its own session (a read-only one for a
dashboard, say) and end any of them; a read-only credential may only rotate itself. The node
keeps only digests, so a lost token cannot be shown again: mint a new one and revoke the old.
"""

from __future__ import annotations

from typing import Any

from perund.api.credentials import Access, Credential, CredentialRegistry, Scope
from perund.api.facade import NodeFacade
from perund.api.method_spec import CallContext, Method, Param
from perund.api.schema import BOOLEAN, SECONDS, SESSION_ID, TOKEN, TOKEN_ID, obj
from perund.channel.memo import unshowable
from perund.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ResourceNotFound,
    Unauthorized,
)

SCOPES = (Scope.SESSION.value, Scope.READ.value)

TOKEN_INFO = obj({
    "tokenId": TOKEN_ID,
    "scope": {"type": "string", "enum": list(SCOPES)},
    "label": {"type": "string", "maxLength": 64},
    "created": SECONDS,
}, ["tokenId", "scope", "label", "created"], description="a session credential (not the token)")

NEW_TOKEN = obj({**TOKEN_INFO["properties"], "token": TOKEN},
                ["tokenId", "scope", "label", "created", "token"],
                description="a new session credential and its token (shown only this once)")

_LABEL = {"type": "string", "maxLength": 64,
          "description": "what the credential is for (\"dashboard\"), shown by session_listTokens"}


def _session(args: dict[str, Any]) -> str:
    return str(args["sessionId"])[2:].lower()


def _new(credential: Credential, token: str) -> dict[str, Any]:
    return {**credential.to_json(), "token": token}


async def _durable(credentials: CredentialRegistry) -> None:
    """Wait until the change is on disk: a client told its credential is revoked must be able
    to count on it after a crash too (and a new token on being valid after a restart)."""
    try:
        await credentials.saved()
    except OSError:
        # Logged where the write failed; in force in memory until the node stops.
        raise Internal("the change is in force but could not be recorded on disk: it ends "
                       "when the node stops") from None


def token_methods(facade: NodeFacade, credentials: CredentialRegistry) -> list[Method]:
    """The credential methods of the API, bound to `credentials`."""

    async def open_session(args: dict[str, Any]) -> str:
        session_id = _session(args)
        if not any(s.session_id.hex() == session_id for s in await facade.session_list()):
            raise ResourceNotFound("no such session", type="session", id=args["sessionId"])
        return session_id

    async def create(args: dict[str, Any], ctx: CallContext) -> Any:
        label = args.get("label", "")
        if any(unshowable(char) for char in label):
            # Shown by session_listTokens to the session's other users and the operator: no
            # escape sequence may redraw their terminal or forge a row.
            problem = "printable text: no control characters, line breaks or direction marks"
            raise InvalidArgument(f"label: {problem}", name="label", requirement=problem)
        session_id = await open_session(args)
        credential, token = credentials.issue(session_id, Scope(args["scope"]), label)
        await _durable(credentials)
        return _new(credential, token)

    async def list_tokens(args: dict[str, Any], ctx: CallContext) -> Any:
        session_id = await open_session(args)
        return [c.to_json() for c in credentials.of_session(session_id)]

    async def revoke(args: dict[str, Any], ctx: CallContext) -> Any:
        credentials.revoke(_session(args), str(args["tokenId"])[2:].lower())
        await _durable(credentials)
        return True

    async def rotate(args: dict[str, Any], ctx: CallContext) -> Any:
        caller = ctx.credential
        assert caller is not None  # the dispatcher authorised the call
        session_id = await open_session(args)
        if "tokenId" in args:
            old_id = str(args["tokenId"])[2:].lower()
        elif caller.session_id is not None:
            old_id = caller.id
        else:
            raise InvalidArgument("the operator names the credential to rotate",
                                  name="tokenId", value=None, requirement="a tokenId")
        if old_id != caller.id and caller.scope is Scope.READ:
            raise Unauthorized("a read-only credential may rotate only itself",
                               method="session_rotateToken", scope=caller.scope.value,
                               requirement="a session credential")
        old = next((c for c in credentials.of_session(session_id) if c.id == old_id), None)
        if old is None:
            raise ResourceNotFound("no such credential", type="token", id="0x" + old_id)
        credentials.may_change(session_id, 2)  # both, or neither
        credential, token = credentials.issue(session_id, old.scope, old.label)
        credentials.revoke(session_id, old.id)
        await _durable(credentials)
        return _new(credential, token)

    session = Param("sessionId", SESSION_ID)
    errors = (ResourceNotFound, Unauthorized, FailedPrecondition)
    return [
        Method("session_createToken", "Mint a credential of this session: scope session (all "
               "of the session's methods) or read (reads and pushes only).",
               (session, Param("scope", {"type": "string", "enum": list(SCOPES)}),
                Param("label", _LABEL, required=False)),
               NEW_TOKEN, create, errors=(*errors, InvalidArgument), access=Access.SESSION),
        Method("session_listTokens", "The session's live credentials (never their tokens).",
               (session,), {"type": "array", "items": TOKEN_INFO}, list_tokens,
               errors=errors, access=Access.SESSION),
        Method("session_revokeToken", "End one of the session's credentials at once (open "
               "WebSockets authenticated with it are closed).",
               (session, Param("tokenId", TOKEN_ID)), BOOLEAN, revoke, errors=errors,
               access=Access.SESSION),
        Method("session_rotateToken", "Replace a credential by a new one of the same scope and "
               "label; the old one ends. Without tokenId: the calling credential.",
               (session, Param("tokenId", TOKEN_ID, required=False)), NEW_TOKEN, rotate,
               errors=(*errors, InvalidArgument), access=Access.SESSION_READ),
    ]
