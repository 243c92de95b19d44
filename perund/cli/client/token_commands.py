"""`token list | create | revoke | rotate`: a session's credentials, from the CLI.

A session credential (or the operator's token) mints, lists and revokes the session's
credentials; a read-only one may only rotate itself. A new token is written to `--out FILE`
(mode 0600) or shown once: the node keeps only its hash. Rotating the credential in use, read
from a token file, writes its successor back to that file: the old one is revoked.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from perund.cli.client import render
from perund.cli.client.commands import Context, Handler, Outcome, Result
from perund.cli.client.credentials import (
    check_token_file_target,
    credential_id,
    write_token_file,
)
from perund.cli.client.errors import UsageError
from perund.cli.client.render import short_id


def _created(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def _resolve(ctx: Context, ref: str) -> str:
    """A credential ID from its full form or an unambiguous prefix."""
    text = ref.strip().lower()
    hex_part = text[2:] if text.startswith("0x") else text
    ids = [t["tokenId"] for t in ctx.call("session_listTokens", sessionId=ctx.session_id())]
    matches = [i for i in ids if i[2:].startswith(hex_part)] if hex_part else []
    if len(matches) == 1:
        return str(matches[0])
    if not matches:
        raise UsageError(f"no credential {ref} in this session (`token list` shows them)")
    raise UsageError(f"credential prefix {ref} is ambiguous: " + ", ".join(
        short_id(i) for i in matches[:5]))


def _new_token(ctx: Context, minted: dict[str, Any], out: str | None, verb: str,
               replacing: str | None = None, written_back: bool = False) -> Outcome:
    token = str(minted["token"])
    where = f"{token}\n(shown only now: the node keeps its hash only)"
    written = None
    if out:
        try:
            write_token_file(out, token, replacing)
        except (OSError, UsageError) as exc:
            # The node has minted it (and revoked the old one, when rotating): losing it
            # here would lock the user out, so it is shown instead.
            reason = exc.message if isinstance(exc, UsageError) else \
                f"cannot write {out}: {(exc.strerror or str(exc)).lower()}"
            where = f"{reason}; the new token instead:\n{token}\n(shown only now: the node " \
                    "keeps its hash only)"
        else:
            written = out
            where = (f"written back to {out}, the file it was read from (the old one is "
                     "revoked)" if written_back else f"written to {out} (--token-file {out})")
    text = f"{verb} {minted['scope']} credential {ctx.style.ident(minted['tokenId'])}" + \
        (f" ({render.shown_text(minted['label'])})" if minted.get("label") else "") + \
        f": {where}"
    return Outcome(minted, text, credential_file=written)


def token_list(ctx: Context, args: argparse.Namespace) -> Result:
    """`token list`."""
    tokens = ctx.call("session_listTokens", sessionId=ctx.session_id())
    if not tokens:
        return Outcome(tokens, "this session holds no credential")
    rows = [[ctx.style.ident(t["tokenId"]), t["scope"], render.shown_text(t["label"]) or "-",
             _created(float(t["created"]))] for t in tokens]
    return Outcome(tokens, render.table(["CREDENTIAL", "SCOPE", "LABEL", "CREATED"], rows,
                                        ctx.style))


def token_create(ctx: Context, args: argparse.Namespace) -> Result:
    """`token create [--read] [--label L] [--out FILE]`."""
    if args.out:
        check_token_file_target(args.out)  # a new credential replaces none
    minted = ctx.call("session_createToken", sessionId=ctx.session_id(),
                      scope="read" if args.read else "session", label=args.label or "")
    return _new_token(ctx, minted, args.out, "minted")


def token_revoke(ctx: Context, args: argparse.Namespace) -> Result:
    """`token revoke ID`."""
    token_id = _resolve(ctx, args.token)
    ctx.call("session_revokeToken", sessionId=ctx.session_id(), tokenId=token_id)
    return Outcome(True, f"credential {ctx.style.ident(token_id)} is revoked")


def token_rotate(ctx: Context, args: argparse.Namespace) -> Result:
    """`token rotate [ID] [--out FILE]`: without ID, the credential this CLI uses. The new
    token goes to --out; else, when the rotated credential is the one in use and was read
    from a token file, back to that file (which would otherwise hold a revoked one)."""
    in_use = credential_id(ctx.api.token)
    params: dict[str, Any] = {"sessionId": ctx.session_id()}
    rotated = in_use
    if args.token:
        rotated = params["tokenId"] = _resolve(ctx, args.token)
    rotating_own = rotated is not None and rotated == in_use
    write_back = not args.out and rotating_own and ctx.token_file is not None
    out = ctx.token_file if write_back else args.out
    if out:
        check_token_file_target(out, replacing=rotated)
    minted = ctx.call("session_rotateToken", **params)
    outcome = _new_token(ctx, minted, out, "rotated into", rotated, written_back=write_back)
    if rotating_own:
        outcome.credential = str(minted["token"])  # the shell goes on with the new one
    return outcome


TOKEN_HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("token", "list"): token_list,
    ("token", "create"): token_create,
    ("token", "revoke"): token_revoke,
    ("token", "rotate"): token_rotate,
}
"""(command, action) → handler of the token commands."""
