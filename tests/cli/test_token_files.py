"""Token files: a credential is written only where no file is, or over the file holding the
very credential being rotated; rotating the credential in use writes its successor back to
the file it was read from."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path
from typing import Any

import pytest

from perund.cli.client.commands import Context
from perund.cli.client.credentials import (
    check_token_file_target,
    credential_id,
    write_token_file,
)
from perund.cli.client.errors import UsageError
from perund.cli.client.render import Style
from perund.cli.client.settings import token_file_of
from perund.cli.client.token_commands import token_create, token_rotate

SESSION = "0x" + "ab" * 16
ALICE = "pdt_" + "a1" * 16 + "_" + "A" * 43
BOB = "pdt_" + "b0" * 16 + "_" + "B" * 43
NEW = "pdt_" + "c2" * 16 + "_" + "C" * 43
OPERATOR = "operator-token-" + "x" * 30


class _Node:
    """session_rotateToken and session_createToken, recording what was asked."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.asked: list[str] = []

    def result(self, method: str, params: dict[str, Any], timeout: float | None = 0) -> Any:
        self.asked.append(method)
        assert method in ("session_rotateToken", "session_createToken")
        return {"tokenId": credential_id(NEW), "scope": "session", "label": "", "token": NEW}


def _token_file(folder: Path, name: str, token: str) -> Path:
    path = folder / name
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def _context(token: str, token_file: Path | None) -> tuple[Context, _Node]:
    node = _Node(token)
    ctx = Context(node, Style(False), "127.0.0.1:1", SESSION,  # type: ignore[arg-type]
                  None if token_file is None else str(token_file))
    return ctx, node


def test_another_credentials_file_is_never_written_over(tmp_path: Path) -> None:
    bobs = _token_file(tmp_path, "bob.token", BOB)
    with pytest.raises(UsageError, match=r"bob.token holds another credential \(0xb0b0b0b0…\)"
                       ) as refused:
        check_token_file_target(str(bobs), replacing=credential_id(ALICE))
    assert BOB not in str(refused.value) and BOB[4:36] not in str(refused.value).replace("…", "")
    with pytest.raises(UsageError, match="holds another credential"):
        write_token_file(str(bobs), NEW)  # a new credential replaces none
    assert bobs.read_text() == BOB + "\n"
    check_token_file_target(str(bobs), replacing=credential_id(BOB))  # its own rotation


def test_the_operators_token_file_is_refused_for_what_it_is(tmp_path: Path) -> None:
    operators = _token_file(tmp_path, "api.token", OPERATOR)
    with pytest.raises(UsageError, match="holds an API token that is not a session credential"
                       ) as refused:
        check_token_file_target(str(operators))
    assert OPERATOR not in str(refused.value)


def test_token_create_never_writes_over_a_credential(tmp_path: Path) -> None:
    """`token create --out dash.token` over a read-only dashboard's file would have turned it
    into a full credential."""
    dashboard = _token_file(tmp_path, "dash.token", BOB)
    ctx, node = _context(ALICE, None)
    args = argparse.Namespace(read=False, label=None, out=str(dashboard))
    with pytest.raises(UsageError, match="holds another credential"):
        token_create(ctx, args)
    assert node.asked == [] and dashboard.read_text() == BOB + "\n"


def test_rotating_into_another_users_file_is_refused_before_the_node_is_asked(
        tmp_path: Path) -> None:
    alices = _token_file(tmp_path, "alice.token", ALICE)
    bobs = _token_file(tmp_path, "bob.token", BOB)
    ctx, node = _context(ALICE, alices)
    with pytest.raises(UsageError, match="holds another credential"):
        token_rotate(ctx, argparse.Namespace(token=None, out=str(bobs)))
    assert node.asked == [] and bobs.read_text() == BOB + "\n"


def test_rotating_the_credential_in_use_writes_it_back_to_its_file(tmp_path: Path) -> None:
    alices = _token_file(tmp_path, "alice.token", ALICE)
    alices.chmod(0o640)
    ctx, node = _context(ALICE, alices)
    outcome = token_rotate(ctx, argparse.Namespace(token=None, out=None))
    assert node.asked == ["session_rotateToken"]
    assert alices.read_text() == NEW + "\n"
    assert stat.S_IMODE(alices.stat().st_mode) == 0o600
    assert f"written back to {alices}, the file it was read from" in outcome.text
    assert NEW not in outcome.text
    assert (outcome.credential, outcome.credential_file) == (NEW, str(alices))
    assert [p.name for p in tmp_path.iterdir()] == ["alice.token"]  # no temporary left


def test_a_credential_not_from_a_file_is_shown_once(tmp_path: Path) -> None:
    ctx, _ = _context(ALICE, None)
    outcome = token_rotate(ctx, argparse.Namespace(token=None, out=None))
    assert NEW in outcome.text and outcome.credential_file is None


def test_the_token_file_is_the_one_the_token_was_read_from() -> None:
    env = {"PERUND_TOKEN_FILE": "env.token"}
    assert token_file_of("option.token", {**env, "PERUND_TOKEN": OPERATOR}) == "option.token"
    assert token_file_of(None, {**env, "PERUND_TOKEN": OPERATOR}) is None
    assert token_file_of(None, env) == "env.token"
    assert token_file_of(None, {}) is None
