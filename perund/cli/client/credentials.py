"""Session credentials on the CLI's side: recognising one, and keeping one in a file.

A token file holds one token and nothing else, mode 0600. The CLI writes one only where no file
is, or over a file that holds a token already (rotating a credential into the file it was read
from), never over anything else: a mistyped path must not destroy a file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from perund.cli.client.errors import UsageError

SESSION_TOKEN = re.compile(r"^pdt_[0-9a-f]{32}_[A-Za-z0-9_-]{43}$")


def is_session_credential(token: str) -> bool:
    """Whether `token` is a session's own credential (not the operator's token)."""
    return bool(SESSION_TOKEN.match(token))


def check_token_file_target(path: str) -> None:
    """UsageError unless a token may be written to `path` (before anything is asked of the
    node, so a refused path costs nothing)."""
    target = Path(path).expanduser()
    if not target.exists():
        if not target.parent.is_dir():
            raise UsageError(f"cannot write {path}: its folder does not exist")
        return
    if not target.is_file():
        raise UsageError(f"cannot write {path}: it is not a regular file")
    try:
        held = target.read_text(encoding="ascii").strip() if target.stat().st_size < 200 else ""
    except (OSError, UnicodeDecodeError):
        held = ""
    if not is_session_credential(held):
        raise UsageError(f"{path} exists and does not hold a token: choose another path")


def write_token_file(path: str, token: str) -> None:
    """Write `token` to `path` (mode 0600, whole or not at all)."""
    target = Path(path).expanduser()
    check_token_file_target(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(token + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def credential_note(token: str, written_to: str | None, in_shell: bool) -> str:
    """What `session open` says of the session's credential."""
    if not token:
        return "none returned (an older node?)"
    if written_to:
        return f"written to {written_to} (this session's alone: --token-file {written_to})"
    if in_shell:
        return "this shell acts with the session's own credential from now on " \
               "(`token create --out FILE` mints one for other programs)"
    return f"{token} (this session's alone: keep it secret, it is shown only now)"
