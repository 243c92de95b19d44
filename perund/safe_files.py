"""Reading the files a user names, as the node must: only where the operator allows, never much,
never blocking, never quoting them.

`session_open` makes the node read a path its caller chose, and the session config names more
files (keystores, password files, contacts, the store). A hostile or mistaken path must not make
the node read `/dev/zero` until memory runs out, hang on a FIFO nobody writes, read the API token
or another user's keystore, or send a file's content back in an error. So:

- a path is resolved (symlinks included) and must lie inside one of the allowed folders and
  outside every forbidden one (the node's own data folder);
- what is read must be a regular file of at most `MAX_FILE_SIZE` bytes, checked on the opened
  descriptor (opened non-blocking, so a FIFO or a device cannot stall the open), and the
  descriptor's real path is checked again, so a symlink swapped in after the check changes
  nothing;
- errors name the field, the path and the rule broken: never what the file holds.

`FileRules()` without folders only applies the file checks: tools and tests that read their own
files use it; the node always passes its folders.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from perund.errors import InvalidConfig

MAX_FILE_SIZE = 64 * 1024
"""Largest config, contacts, keystore or password file the node reads (64 KiB)."""

ALLOWED_KEY = "sessions.config_dirs"
"""The node config key naming the allowed folders (named in errors)."""


_SECRET_NAME = re.compile(r"pass|secret|private|mnemonic|seed|priv_?key", re.IGNORECASE)
_KEY_LIKE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_SHOWN_MAX = 100


def shown_value(name: str, value: object) -> object:
    """What an error may show of the value a config file gives a known key: short printable
    scalars only (a mistyped address or duration, which the user needs to see), and nothing
    for a key whose name looks like a secret's. Anything else of a file is never shown: the
    file may not be a config at all."""
    leaf = name.rsplit(".", 1)[-1]
    if _SECRET_NAME.search(leaf) and not leaf.endswith("_file"):
        return "<hidden>"
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str) and len(value) <= _SHOWN_MAX and value.isprintable():
        return value
    return "<not shown>"


def key_name(name: str) -> str:
    """A key (or alias) read from a file, as an error may name it: when it looks like a key
    someone typed, to point at a typo; otherwise not at all."""
    return name if _KEY_LIKE.match(name) else "(a key)"


def _refused(field: str, path: Path | str, rule: str) -> InvalidConfig:
    return InvalidConfig(f"{field}: {path}: {rule}", name=field, value=str(path),
                         requirement=rule)


@dataclass(frozen=True)
class FileRules:
    """Where the node may read (and create) a session's files.

    `allowed` None means anywhere (no folder rule); an empty tuple means nowhere.
    """

    allowed: tuple[Path, ...] | None = None
    forbidden: tuple[Path, ...] = ()
    max_size: int = MAX_FILE_SIZE
    narrowed: bool = False
    """Narrowed to one session's folder (`for_session`), for the error message."""

    @classmethod
    def within(cls, allowed: Iterable[Path], forbidden: Iterable[Path] = ()) -> FileRules:
        """Rules for the given folders (resolved now, so later symlink games cannot move
        them)."""
        return cls(tuple(Path(p).resolve() for p in allowed),
                   tuple(Path(p).resolve() for p in forbidden))

    def for_session(self, session_file: Path) -> FileRules:
        """The rules for the files that the session config at `session_file` names: these,
        with the allowed folders narrowed to the one that holds `session_file` (the deepest,
        when they nest). With a folder of its own for each user, as `perund generate` makes
        them, no session can name another user's keystore, password, contacts or store
        (docs/security.md). Unchanged when any folder is allowed."""
        if self.allowed is None:
            return self
        try:
            resolved = session_file.resolve()
        except (OSError, RuntimeError):
            return replace(self, allowed=())
        holding = [folder for folder in self.allowed
                   if resolved == folder or resolved.is_relative_to(folder)]
        if not holding:
            return replace(self, allowed=())
        return replace(self, allowed=(max(holding, key=lambda folder: len(folder.parts)),),
                       narrowed=True)

    def place(self, path: Path, field: str) -> None:
        """InvalidConfig unless the resolved `path` is inside an allowed folder and outside
        every forbidden one."""
        for folder in self.forbidden:
            if path == folder or path.is_relative_to(folder):
                raise _refused(field, path, "inside the node's own data folder, which sessions "
                                            "may not use")
        if self.allowed is None:
            return
        if not self.allowed:
            raise _refused(field, path, f"no folder is allowed for session files: the node "
                                        f"config's {ALLOWED_KEY} names none")
        if not any(path == folder or path.is_relative_to(folder) for folder in self.allowed):
            if self.narrowed:
                raise _refused(field, path, f"outside {self.allowed[0]}, the folder of "
                                            f"{ALLOWED_KEY} that holds the session config "
                                            "(a session's files stay in its own folder)")
            raise _refused(field, path, f"outside the folders session files may come from "
                                        f"({ALLOWED_KEY})")

    def resolve_existing(self, path: Path, field: str) -> Path:
        """`path` resolved (it must exist), and placed."""
        try:
            resolved = path.resolve(strict=True)
        except FileNotFoundError:
            raise _refused(field, path, "no such file") from None
        except (OSError, RuntimeError) as exc:  # a symlink loop is a RuntimeError
            raise _refused(field, path, f"cannot resolve it: {os_reason(exc)}") from None
        self.place(resolved, field)
        return resolved

    def resolve_new(self, path: Path, field: str) -> Path:
        """`path` resolved for something the node creates there (its parent must exist), and
        placed."""
        try:
            parent = path.parent.resolve(strict=True)
        except FileNotFoundError:
            raise _refused(field, path, "its folder does not exist") from None
        except (OSError, RuntimeError) as exc:
            raise _refused(field, path, f"cannot resolve it: {os_reason(exc)}") from None
        try:
            resolved = (parent / path.name).resolve()
        except (OSError, RuntimeError) as exc:  # a link swapped while it is resolved, a loop
            raise _refused(field, path, f"cannot resolve it: {os_reason(exc)}") from None
        self.place(resolved, field)
        return resolved

    def read(self, path: Path, field: str) -> bytes:
        """The bytes of the regular file `path`, read under these rules."""
        resolved = self.resolve_existing(path, field)
        try:
            fd = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            raise _refused(field, path, f"cannot open it: {os_reason(exc)}") from None
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise _refused(field, path, "a folder, not a file")
            if not stat.S_ISREG(info.st_mode):
                raise _refused(field, path, "not a regular file (a device, pipe or socket)")
            if info.st_size > self.max_size:
                raise _refused(field, path, f"larger than {self.max_size // 1024} KiB")
            actual = _opened_path(fd)
            if actual is not None and actual != resolved:
                self.place(actual, field)  # swapped after resolving: judge what was opened
            return _read_at_most(fd, self.max_size, field, path)
        finally:
            os.close(fd)

    def read_text(self, path: Path, field: str, what: str) -> str:
        """`read`, decoded as UTF-8 (`what` names the file in the error)."""
        data = self.read(path, field)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _refused(field, path, f"not a {what}: not UTF-8 text") from None


def _read_at_most(fd: int, limit: int, field: str, path: Path) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, limit + 1 - total)
        except BlockingIOError:
            raise _refused(field, path, "not a regular file (reading it would block)") from None
        except OSError as exc:
            raise _refused(field, path, f"cannot read it: {os_reason(exc)}") from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:  # grew since fstat
            raise _refused(field, path, f"larger than {limit // 1024} KiB")


def _opened_path(fd: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # no /proc (not Linux): the resolve-then-open check stands alone
        return None


def unknown_key(key: object, known: Iterable[str]) -> str:
    """The requirement of an unknown key, naming the known one it was likely meant to be
    (`dta_dir` → "unknown key (did you mean data_dir?)")."""
    close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.75)
    return f"unknown key (did you mean {close[0]}?)" if close else "unknown key"


def os_reason(exc: BaseException) -> str:
    """Why an OS call failed, in a message's words ("not a directory"), never a path."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__
