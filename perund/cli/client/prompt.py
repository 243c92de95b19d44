"""Running the shell of perund-cli: connecting to the node, then the prompt (history in the
state dir, Tab completion, the bottom toolbar) or, with lines piped in, one command a line."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Any

from perund.cli.apiclient import ApiClient, ApiError, AuthFailed, NodeUnreachable
from perund.cli.client.completion import ShellCompleter
from perund.cli.client.credentials import is_session_credential
from perund.cli.client.errors import EXIT_OK, CliError, failure_of
from perund.cli.client.render import Style
from perund.cli.client.settings import (
    node_of,
    session_of,
    state_dir,
    token_file_of,
    token_of,
)
from perund.cli.client.shell import Shell
from perund.cli.client.shell_state import Job


def _history() -> Any:
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    folder = state_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / "cli_history"
        path.touch(mode=0o600, exist_ok=True)
        return FileHistory(str(path))
    except OSError:
        return InMemoryHistory()  # a read-only home: history for this run only


def run_shell(args: argparse.Namespace, style: Style) -> int:
    """Run the shell until `exit` or ^D; the exit code."""
    label = str(args.node)
    try:
        node = node_of(args.node, os.environ)
        label = str(node)
        token = token_of(args.token_file, os.environ)
        session = session_of(args.session, os.environ)
        api = ApiClient(node.port, token, node.host, timeout=60.0)
        info = api.call("node_getConfig")
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
        shell = Shell(api, style, label, interactive)
        shell.ctx.token_file = token_file_of(args.token_file, os.environ)
        shell.ctx.symbols = list(info.get("assets", {}))  # for `--currency` and its completion
        shell.connect_stream()
        if session is None and is_session_credential(token):
            session = shell.ctx.session_id()  # the credential's own session
        if session is not None:
            shell.use(session, None)
    except (ApiError, NodeUnreachable, AuthFailed, CliError) as exc:
        failure = failure_of(exc, label)
        print(f"{style.bad('error:')} {failure.line}", file=sys.stderr)
        return failure.exit_code
    threading.Thread(target=shell.poll_progress, name="perund-cli-progress", daemon=True).start()
    banner = (f"perund-cli: node {label} (perund {info.get('version')}, chain "
              f"{info.get('chainId')}); `help` lists the commands"
              + (", Tab completes, ^D leaves" if interactive else ""))
    try:
        if interactive:
            _prompt_loop(shell, banner)
        else:
            shell.say(banner)
            for line in sys.stdin:
                job = shell.execute(line)
                if job is False:
                    break
                if isinstance(job, Job):
                    shell.wait_foreground(job)
    finally:
        shell.closing = True
        if shell.stream is not None:
            shell.stream.close()
    if not interactive and shell.first_failure is not None:
        return shell.first_failure  # a script reading a pipe learns a line failed
    return EXIT_OK


def _prompt_loop(shell: Shell, banner: str) -> None:
    import asyncio

    asyncio.run(_prompt_main(shell, banner))


async def _prompt_main(shell: Shell, banner: str) -> None:
    # One event loop for the whole shell (prompt_async, not prompt): what other threads print
    # through patch_stdout is scheduled on the running loop, and a loop per prompt would drop
    # what arrives while one prompt ends and the next begins.
    import asyncio

    from prompt_toolkit import PromptSession
    from prompt_toolkit.output.color_depth import ColorDepth
    from prompt_toolkit.patch_stdout import patch_stdout
    from prompt_toolkit.utils import is_dumb_terminal

    # prompt_toolkit draws the toolbar only where it can ask the cursor position: not on a
    # dumb terminal, nor with PROMPT_TOOLKIT_NO_CPR. There, progress goes out as lines.
    shell.toolbar_visible = not is_dumb_terminal() and os.environ.get("PROMPT_TOOLKIT_NO_CPR") \
        != "1"
    session: PromptSession[str] = PromptSession(
        history=_history(), completer=ShellCompleter(shell), complete_while_typing=False,
        bottom_toolbar=shell.toolbar if shell.toolbar_visible else None,
        refresh_interval=1.0,
        color_depth=None if shell.style.enabled else ColorDepth.MONOCHROME)
    print(banner, flush=True)
    with patch_stdout(raw=True):
        while True:
            try:
                line = await session.prompt_async(shell.prompt_text)
            except KeyboardInterrupt:
                continue  # ^C clears the line, as in a shell
            except EOFError:
                break
            job = shell.execute(line)
            if job is False:
                break
            if isinstance(job, Job):
                await asyncio.to_thread(shell.wait_foreground, job)
    with shell.lock:
        running = [j for j in shell.jobs if not j.done.is_set()]
    note = (f"; {len(running)} command{'s go' if len(running) > 1 else ' goes'} on at the node"
            if running else "")
    stays = ": the session stays open on the node" if shell.ctx.session is not None else ""
    print(f"bye{stays}{note}")
