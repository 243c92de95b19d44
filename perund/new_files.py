"""New files that appear whole or not at all, and never over an existing one.

A key file or the API token, created with `O_CREAT | O_EXCL` and then written, is empty for a
moment: a reader then (the CLI, a second node racing this one) takes nothing for the content,
and a crash leaves an empty file that every later start refuses or misreads. So the content is
written to a file of its own beside the target, fsynced, and linked to the target's name,
which fails if that name exists; the directory is fsynced after.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_whole(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create `path` holding `data` (mode `mode`), whole or not at all; FileExistsError if
    `path` exists (then nothing is changed), another OSError if it cannot be written."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(aside, path)
    finally:
        aside.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
