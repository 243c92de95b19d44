"""A user who may edit the folder around her store cannot make the node write to, or read
from, another user's files through it (perund/storage/store_folder.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from perund.errors import StoreError
from perund.storage.store import SessionStore
from tests.storage.helpers import persisted_payments

VICTIM = b"BOB-VICTIM-CONTENT\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """Another user's file (bob's keystore, say)."""
    bob = tmp_path / "bob"
    bob.mkdir()
    path = bob / "victim.txt"
    path.write_bytes(VICTIM)
    return path


def _store_with_payments(path: Path, clock: Clock, count: int = 20) -> SessionStore:
    store = SessionStore(path, clock, compact_min_bytes=8 * 1024)
    for value in list(persisted_payments(count)):
        store.put(value)
        clock.advance(0)
    return store


@pytest.mark.parametrize("name", ["lock", "data", "payments", "payments.idx", "retired",
                                  "retired.idx"])
def test_a_link_where_a_store_file_goes_is_refused_and_its_target_untouched(
        tmp_path: Path, victim: Path, name: str) -> None:
    clock = Clock()
    _store_with_payments(tmp_path / "alice" / "db", clock).close()
    planted = tmp_path / "alice" / "db" / name
    if planted.exists():
        planted.unlink()
    planted.symlink_to(victim)
    with pytest.raises(StoreError, match=f"'{name}' is a symbolic link") as refused:
        SessionStore(tmp_path / "alice" / "db", clock)
    assert str(tmp_path / "alice" / "db") in str(refused.value)
    assert "VICTIM" not in str(refused.value)
    assert victim.read_bytes() == VICTIM


def test_a_second_name_of_another_file_is_refused(tmp_path: Path, victim: Path) -> None:
    folder = tmp_path / "alice" / "db"
    folder.mkdir(parents=True, mode=0o700)
    os.link(victim, folder / "data")
    with pytest.raises(StoreError, match="'data' has another name too"):
        SessionStore(folder, Clock())
    assert victim.read_bytes() == VICTIM


def test_a_link_where_the_compaction_folder_goes_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "bob" / "db"
    other.mkdir(parents=True)
    folder = tmp_path / "alice" / "db"
    folder.mkdir(parents=True, mode=0o700)
    (folder / "compact").symlink_to(other)
    with pytest.raises(StoreError, match="'compact' is not a folder of its own"):
        SessionStore(folder, Clock())
    assert other.exists()


def test_a_folder_others_may_write_to_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir(mode=0o700)
    folder.chmod(0o777)
    with pytest.raises(StoreError, match="may be written by other users"):
        SessionStore(folder, Clock())


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir(mode=0o700)
    os.chown(folder, 4242, 4242)
    with pytest.raises(StoreError, match="belongs to user 4242"):
        SessionStore(folder, Clock())


def test_an_open_store_keeps_its_folder_when_another_is_swapped_in(
        tmp_path: Path, victim: Path) -> None:
    """The store's folder moved aside while open, and one full of links to another user's
    files put in its place: the store goes on writing (and compacting) in its own folder."""
    clock = Clock()
    path = tmp_path / "alice" / "db"
    store = _store_with_payments(path, clock)
    moved = tmp_path / "alice" / "db.moved"
    path.rename(moved)
    path.mkdir(mode=0o700)
    for name in ("lock", "data", "payments", "payments.idx", "compact"):
        (path / name).symlink_to(victim)
    compactions = store.compactions
    for value in list(persisted_payments(200))[-200:]:
        store.put(value)
        clock.advance(0)
    assert store.compactions > compactions  # it compacted after the swap, in its own folder
    store.close()
    assert victim.read_bytes() == VICTIM
    assert all((path / name).is_symlink() for name in ("lock", "data", "compact"))
    reopened = SessionStore(moved, clock)
    assert list(reopened.channels())
    reopened.close()


def test_a_link_anywhere_on_the_approved_path_is_refused_not_followed(tmp_path: Path) -> None:
    """The path a store is given is the one its session's files were approved with (free of
    links then): a link found on it now was swapped in since, and is not followed (found by
    an audit: resolving the path again let a user's race open another user's store)."""
    clock = Clock()
    bob = tmp_path / "bob" / "db"
    _store_with_payments(bob, clock).close()
    before = {p.name: p.read_bytes() for p in bob.iterdir() if p.is_file()}
    alice = tmp_path / "alice"
    alice.mkdir()
    (alice / "db").symlink_to(bob)  # the last component
    with pytest.raises(StoreError, match="'db' on its path is a symbolic link"):
        SessionStore(alice / "db", clock)
    (alice / "db").unlink()
    (alice / "sub").symlink_to(tmp_path / "bob")  # a component above it
    with pytest.raises(StoreError, match="'sub' on its path is a symbolic link"):
        SessionStore(alice / "sub" / "db", clock)
    assert {p.name: p.read_bytes() for p in bob.iterdir() if p.is_file()} == before


def test_a_missing_store_folder_behind_a_link_is_not_made_in_the_links_target(
        tmp_path: Path) -> None:
    """A store's missing folders are made inside their parents as opened, not by path: made by
    path, a link swapped in above them made the node create a folder in another user's tree
    before the walk refused it."""
    bob = tmp_path / "bob"
    bob.mkdir()
    alice = tmp_path / "alice"
    alice.mkdir()
    (alice / "sub").symlink_to(bob)
    with pytest.raises(StoreError, match="'sub' on its path is a symbolic link"):
        SessionStore(alice / "sub" / "db", Clock())
    assert list(bob.iterdir()) == []


def test_missing_folders_on_the_path_are_made_the_nodes_own(tmp_path: Path) -> None:
    SessionStore(tmp_path / "alice" / "data" / "db", Clock()).close()
    alice = tmp_path / "alice"
    for folder in (alice, alice / "data", alice / "data" / "db"):
        assert folder.is_dir() and not folder.is_symlink()
        assert folder.stat().st_mode & 0o777 == 0o700


def test_a_folder_that_cannot_be_made_is_named_without_blaming_links(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as root: every folder is writable")
    with pytest.raises(StoreError, match=r"cannot open or make the folder 'db'.*Permission denied"):
        SessionStore(locked / "db", Clock())
