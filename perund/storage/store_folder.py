"""A session store's folder, held open so that no one can swap another file or folder in.

The folder lies inside its user's own folder (docs/security.md, "Files a user names"), and a
user who may edit her folder could put symbolic links where the store's files go, or, between
two opens, move the store's folder aside and put one of her own in its place, whose links
point at another user's store or keystore: the node would then write to, or read from, them.
So the store:

- opens its folder once, component by component without following a symbolic link, and
  refuses a folder that is not the node's own (another owner, or writable by others);
- refuses a store whose files (`check_entries`) are not plain files of its own: a symbolic
  link, a folder or device where a file goes, or a file with a second name (a hard link);
- reaches every file through the open folder (`/proc/self/fd/N` on Linux), never through its
  path again: moving the folder, or any folder above it, changes nothing for an open store.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable

from perund.errors import StoreError

_FOLDER_FLAGS = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_PATH", os.O_RDONLY)
_PROC_FD = "/proc/self/fd"


def open_store_folder(path: str) -> int:
    """A descriptor of folder `path`, opened without following a symbolic link anywhere on it;
    `StoreError` if a component is a link or not a folder, or the folder is not the node's own.
    Missing folders on the path are made (mode 700), each inside its parent as opened: made by
    path, a link swapped in above them meanwhile could have the node make a folder in another
    user's tree.

    `path` is taken as it is, not resolved again: it is the path the session's files were
    approved with (resolved then, so free of links), and resolving it anew would follow a link
    swapped in since (found by an audit: a user flipping her store folder with a link to
    another user's won the race within 20 tries)."""
    parts = [part for part in os.path.abspath(path).split(os.sep) if part]
    fd = os.open(os.sep, _FOLDER_FLAGS)
    try:
        for part in parts:
            try:
                child = _open_or_make(part, fd)
            except OSError as e:
                reason = os.strerror(e.errno) if e.errno else str(e)
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise StoreError(
                        f"store {path}: {part!r} on its path is a symbolic link or not a "
                        f"folder ({reason}); the store's folder must be reached without links",
                        path=path) from None
                raise StoreError(f"store {path}: cannot open or make the folder {part!r} on "
                                 f"its path ({reason})", path=path) from None
            os.close(fd)
            fd = child
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise StoreError(
                f"store {path}: the folder belongs to user {info.st_uid}, not to the node's "
                f"user ({os.geteuid()}); a store's folder is made by the node (chown it if it "
                "was moved here)", path=path)
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise StoreError(
                f"store {path}: the folder may be written by other users "
                f"(mode {stat.S_IMODE(info.st_mode):o}); make it 700", path=path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_or_make(name: str, parent_fd: int) -> int:
    """Folder `name` in the folder `parent_fd`, made there first if missing (its parent is
    then fsynced: the new folder is durable before a store's file is written in it)."""
    try:
        return os.open(name, _FOLDER_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        pass
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        pass  # made meanwhile: opened (or refused) below like any other
    else:
        _fsync_folder(parent_fd)
    return os.open(name, _FOLDER_FLAGS, dir_fd=parent_fd)


def _fsync_folder(folder_fd: int) -> None:
    fd = os.open(f"{_PROC_FD}/{folder_fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_entries(folder_fd: int, names: Iterable[str], path: str) -> None:
    """`StoreError` unless each of `names` in the folder is absent or a plain file with one
    name (the compaction's folder, `folder_names`, may be a folder)."""
    for name in names:
        try:
            info = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            problem = "is a symbolic link"
        elif not stat.S_ISREG(info.st_mode):
            problem = "is not a plain file"
        elif info.st_nlink != 1:
            problem = "has another name too (a hard link)"
        elif info.st_uid != os.geteuid():
            problem = f"belongs to user {info.st_uid}, not to the node's user"
        else:
            continue
        raise StoreError(f"store {path}: {name!r} {problem}; the store's files must be its own",
                         path=path)


def check_folder_entry(folder_fd: int, name: str, path: str) -> None:
    """`StoreError` unless `name` in the folder is absent or a folder (not a link to one)."""
    try:
        info = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        raise StoreError(f"store {path}: {name!r} is not a folder of its own (a symbolic link "
                         "or a file); the store's files must be its own", path=path)


def through(folder_fd: int, path: str) -> str:
    """The path by which to reach the files of the open folder: through its descriptor where
    the system offers that (Linux), else `path` itself."""
    linked = f"{_PROC_FD}/{folder_fd}"
    return linked if os.path.isdir(linked) else path
