"""Fixtures of the perund-cli tests: real `twistd perund` daemons on anvil, and the CLI's
environment (node address, token file, a private state dir for the history)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from perund.cli.generate import Generated
from tests.integration.daemons import Daemon, running
from tests.node.conftest import anvil, anvil_setup, two_nodes  # noqa: F401

CLI = str(Path(sys.executable).with_name("perund-cli"))


def cli_env(daemon: Daemon, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a perund-cli that talks to `daemon`, without colours."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PERUND_") and k not in ("NO_COLOR", "TERM")}
    env.update(PERUND_NODE=f"127.0.0.1:{daemon.port}", PERUND_TOKEN_FILE=str(daemon.token_path),
               XDG_STATE_HOME=str(tmp_path / "state"), NO_COLOR="1", TERM="xterm",
               # pexpect's pty answers no cursor-position request: do not ask.
               PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="250")
    env.update(extra)
    return env


def _check_cli() -> None:
    if not Path(CLI).exists():
        pytest.fail(f"{CLI} is missing: run `make deps`")


@pytest.fixture
def one_daemon(anvil_setup: Generated, tmp_path: Path) -> Iterator[Daemon]:  # noqa: F811
    """One node on anvil; alice and bob are two sessions of it."""
    _check_cli()
    with running(anvil_setup.node_config, workdir=tmp_path) as (daemon,):
        yield daemon


@pytest.fixture
def two_daemons(anvil_setup: Generated,  # noqa: F811
                tmp_path: Path) -> Iterator[tuple[Daemon, ...]]:
    """Two nodes on anvil: alice's and bob's."""
    _check_cli()
    with running(*two_nodes(anvil_setup), workdir=tmp_path) as both:
        yield both
