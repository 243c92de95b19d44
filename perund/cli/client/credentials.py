"""Session credentials on the CLI's side: recognising one, and keeping one in a file.

A token file holds one token and nothing else, mode 0600. The CLI writes one only where no file
is, or over the file that holds the very credential being rotated (its ID), never over anything
else: a mistyped path must not destroy a file, nor replace another user's or a read-only
credential.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from perund.cli.client.errors import UsageError
from perund.cli.client.render import short_id
from perund.tokens import is_token

SESSION_TOKEN = re.compile(r"^pdt_([0-9a-f]{32})_[A-Za-z0-9_-]{43}$")


def is_session_credential(token: str) -> bool:
    """Whether `token` is a session's own credential (not the operator's token)."""
    return bool(SESSION_TOKEN.match(token))


def credential_id(token: str) -> str | None:
    """The ID of a session credential as the node lists it (`0x` and 32 hex digits); None for
    any other token (the operator's). The ID is not secret: `token list` shows it."""
    match = SESSION_TOKEN.match(token)
    return "0x" + match.group(1) if match else None


def _held_token(target: Path) -> str:
    """What a small text file holds, stripped; "" for anything else."""
    try:
        return target.read_text(encoding="ascii").strip() if target.stat().st_size < 600 else ""
    except (OSError, UnicodeDecodeError):
        return ""


def check_token_file_target(path: str, replacing: str | None = None) -> None:
    """UsageError unless a token may be written to `path`: where no file is, or over a file
    holding the credential whose ID is `replacing` (the one being rotated). Checked before
    anything is asked of the node, so a refused path costs nothing."""
    target = Path(path).expanduser()
    if not target.exists():
        if not target.parent.is_dir():
            raise UsageError(f"cannot write {path}: its folder does not exist")
        if not os.access(target.parent, os.W_OK):
            raise UsageError(f"cannot write {path}: its folder is not writable")
        return
    if not target.is_file():
        raise UsageError(f"cannot write {path}: it is not a regular file")
    held = _held_token(target)
    if not is_token(held):
        raise UsageError(f"{path} exists and does not hold a token: choose another path")
    held_id = credential_id(held)
    if held_id is None:
        raise UsageError(f"{path} holds an API token that is not a session credential (the "
                         "operator's?): choose another path")
    if held_id != replacing:
        raise UsageError(f"{path} holds another credential ({short_id(held_id)}): writing "
                         "over it would lose it; choose another path, or remove that file "
                         "first if its credential is no longer needed")
    if not os.access(target.parent, os.W_OK):
        raise UsageError(f"cannot write {path}: its folder is not writable")


def write_token_file(path: str, token: str, replacing: str | None = None) -> None:
    """Write `token` to `path` (mode 0600, whole or not at all, replacing the file in one
    step); `replacing` as for `check_token_file_target`. A symbolic link is followed, so the
    file it names is the one replaced."""
    check_token_file_target(path, replacing)
    target = Path(os.path.realpath(Path(path).expanduser()))
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
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
