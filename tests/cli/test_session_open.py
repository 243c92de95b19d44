"""`session open CONFIG` with a relative path: sent absolute when it exists here, and when it
exists nowhere the error names the path the user typed, not the one the node made of it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from perund.cli.apiclient import ApiError
from perund.cli.client.commands import Context, session_open
from perund.cli.client.errors import CliError
from perund.cli.client.render import Style

NODE_FOLDER = "/srv/node"


class _Node:
    """session_open as the node answers it: a relative path is read from its own folder."""

    token = "operator-token"

    def __init__(self) -> None:
        self.sent: list[str] = []

    def result(self, method: str, params: dict[str, Any], timeout: float | None = 0) -> Any:
        assert method == "session_open"
        config = str(params["configFile"])
        self.sent.append(config)
        read = config if config.startswith("/") else f"{NODE_FOLDER}/{config}"
        raise ApiError(method, {"code": 205, "message": f"configFile: {read}: no such file",
                                "data": {"category": "client", "name": "configFile",
                                         "value": read, "requirement": "no such file"}})


def _open(typed: str) -> tuple[_Node, pytest.ExceptionInfo[CliError]]:
    node = _Node()
    ctx = Context(node, Style(False), "127.0.0.1:1", None)  # type: ignore[arg-type]
    with pytest.raises(CliError) as refused:
        session_open(ctx, argparse.Namespace(config=typed, token_out=None, quiet=False))
    return node, refused


def test_a_relative_path_found_nowhere_is_named_as_typed(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.chdir(tmp_path)
    node, refused = _open("mynode/alice/sesion.yaml")
    assert node.sent == ["mynode/alice/sesion.yaml"]  # the node may be remote: unchanged
    assert refused.value.message == (
        f"no session file mynode/alice/sesion.yaml: it is neither here ({tmp_path}) nor on "
        f"the node, which looked for {NODE_FOLDER}/mynode/alice/sesion.yaml")
    assert (refused.value.code, refused.value.exit_code) == (205, 1)


def test_a_relative_path_that_exists_here_is_sent_absolute(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "session.yaml").write_text("{}\n")
    node = _Node()
    ctx = Context(node, Style(False), "127.0.0.1:1", None)  # type: ignore[arg-type]
    with pytest.raises(ApiError):  # the node's own error: it names the path sent
        session_open(ctx, argparse.Namespace(config="alice/session.yaml", token_out=None,
                                             quiet=False))
    assert node.sent == [str(tmp_path / "alice" / "session.yaml")]
