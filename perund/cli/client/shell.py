"""The interactive shell of perund-cli.

One prompt_toolkit PromptSession (history in the state dir, Tab completion of commands, peer
aliases, channel IDs and pending proposal/update IDs) and one WebSocket subscribed to the
current session's proposals and updates. Pushes are printed by the socket's reader thread
through `patch_stdout`, above the line being typed. Every command runs in a worker thread:
the prompt waits for it briefly, so quick answers print before the next prompt, and a command
that waits for the peer or the chain goes on in the background, its progress in the bottom
toolbar (or as periodic lines when there is no toolbar: a dumb terminal, or lines piped in).

Its parts: `shell_state.py` what the shell knows (under one lock), `shell_pushes.py` the
WebSocket, this module the commands and their jobs, `completion.py` Tab completion, `prompt.py`
the prompt loop.
"""

from __future__ import annotations

import argparse
import shlex
import threading
import time

from perund.cli.apiclient import ApiError, AuthFailed, NodeUnreachable
from perund.cli.client import render
from perund.cli.client.commands import Long, Outcome, answer_proposal, answer_update, config_path
from perund.cli.client.errors import EXIT_NODE_ERROR, CliError, UsageError
from perund.cli.client.handlers import handler_of
from perund.cli.client.parser import ShellExit, command_summaries, subcommands
from perund.cli.client.progress import changed_shape
from perund.cli.client.render import short_id
from perund.cli.client.settings import check_session_id
from perund.cli.client.shell_pushes import PushListener
from perund.cli.client.shell_state import Job
from perund.words import plural

FOREGROUND_WAIT = 0.5
"""Seconds the prompt waits for a command that waits for the peer or the chain (channel open,
pay, close, ...) before leaving it to run in the background."""

QUICK_WAIT = 5.0
"""Seconds the prompt waits for a quick command (a list, a balance) before the same."""

SESSION_CLOSED_WAIT = 2.0
"""Seconds a failed command waits for the news that its session was closed, when its failure
may be that close's doing."""

PROGRESS_EVERY = 10.0
"""Seconds between progress lines when there is no toolbar."""


class Shell(PushListener):
    """One interactive session of perund-cli: typed lines run as commands, each in a worker
    thread, their progress followed."""

    # -- commands --------------------------------------------------------------------------------

    def execute(self, line: str) -> Job | bool:
        """Run one typed line: False to leave the shell, True when it is done, or the Job
        running it (see `wait_foreground`)."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.error(UsageError(str(exc)))
            return True
        if not words:
            return True
        if words[0] in ("?",):
            words[0] = "help"
        try:
            args = self.parser.parse_args(words)
        except ShellExit:
            return True  # --help was printed
        except UsageError as exc:
            self.error(exc)
            return True
        command = args.command
        if command in ("exit", "quit"):
            return False
        if command == "help":
            self.help(args.topic)
            return True
        if command == "pending":
            self.show_pending()
            return True
        if command == "jobs":
            self.show_jobs()
            return True
        return self.start(args)

    def start(self, args: argparse.Namespace) -> Job:
        """Run a node command in a worker thread."""
        job = Job(0, " ".join(str(v) for v in (args.command, getattr(args, "action", None))
                              if v), session=self.ctx.session)
        if (args.command, getattr(args, "action", None)) == ("session", "close"):
            job.closes = self.ctx.session
        with self.lock:
            self.jobs.append(job)
        threading.Thread(target=self._work, args=(job, args), name="perund-cli-job",
                         daemon=True).start()
        return job

    def wait_foreground(self, job: Job) -> None:
        """Wait for `job` briefly (until done when lines are piped in); then leave it to run
        in the background."""
        if not self.interactive:
            job.done.wait()
            return
        deadline = time.monotonic() + QUICK_WAIT
        while not job.done.wait(FOREGROUND_WAIT):
            # A quick call answers within a moment: its output before the next prompt reads
            # better. One that waits for the peer or the chain goes to the background at once.
            if job.status_of is None and time.monotonic() < deadline:
                continue
            with self.lock:
                self._background_numbers += 1
                job.number = self._background_numbers
            job.backgrounded = True
            where = "progress in the toolbar" if self.toolbar_visible else "`jobs` lists it"
            self.say(self.style.dim(f"[{job.number}] {job.title}: in the background ({where})"))
            return

    def _work(self, job: Job, args: argparse.Namespace) -> None:
        try:
            result = self._dispatch(args, job)
            if isinstance(result, Long):
                job.title, job.status_of = result.title, result.status
                job.status = "starting"
                value = result.call()
                result = result.finish(value)
            self._show(result, args)
        except (ApiError, NodeUnreachable, AuthFailed, CliError) as exc:
            if job.session is not None and _cut_by_a_close(exc):
                # The node fails the calls of a session before it tells its subscribers
                # that the session closed: give that push a moment to come.
                self.session_ended.wait(SESSION_CLOSED_WAIT)
            if job.session is not None and job.session in self.ended_sessions \
                    and job.closes != job.session:
                # Cut short by the session's close: what the node answered (a request cut
                # by a stopping session, a refused credential) would read as the node's
                # failure.
                self.say(self.style.warn(f"{job.title}: ended with session {job.session}, "
                                         "which was closed meanwhile"))
                return
            # A long command may fail long after it was typed: say which one.
            self.error(exc, job.title if job.status_of is not None else "")
        except Exception as exc:  # a bug: keep the shell alive, say what failed
            if self.first_failure is None:
                self.first_failure = EXIT_NODE_ERROR
            self.say(f"{self.style.bad('error:')} {job.title}: {type(exc).__name__}: {exc}")
        finally:
            job.done.set()
            with self.lock:
                if job in self.jobs:
                    self.jobs.remove(job)

    def _dispatch(self, args: argparse.Namespace, job: Job) -> Outcome | Long:
        if args.command == "use":
            session = check_session_id(args.session)
            self.use(session, None)
            return Outcome(session, f"using session {self.style.ident(session)}")
        if args.command in ("accept", "reject"):
            chosen = self._take(args.id)
            accept = args.command == "accept"
            if chosen.kind == "proposal":
                return answer_proposal(self.ctx, chosen.id, accept, chosen.peer)
            assert chosen.channel_id is not None
            job.answering = chosen.channel_id
            return answer_update(self.ctx, chosen.channel_id, chosen.id, accept)
        handler = handler_of(args)
        if handler is None:
            raise UsageError(f"unknown command {args.command}")
        args.in_shell = True
        return handler(self.ctx, args)

    def _show(self, outcome: Outcome, args: argparse.Namespace) -> None:
        if outcome.credential:
            self.switch_credential(outcome.credential)
            self.ctx.token_file = outcome.credential_file
        if outcome.session is not None:
            self.use(outcome.session, outcome.session_label)
            opened = (args.command, getattr(args, "action", None)) == ("session", "open")
            self.session_config = config_path(args.config) if opened else None
        if (args.command, getattr(args, "action", None)) == ("session", "close"):
            self._left_session()
        for note in outcome.notes:
            self.say(self.style.dim(note))
        self.say(outcome.text)
        value = outcome.value
        if _is_channel(value):
            with self.lock:
                self.channels[value["channelId"]] = value
                if value.get("phase") == "closed":
                    self.told_closed.add(value["channelId"])
        elif isinstance(value, list) and value and all(_is_channel(v) for v in value):
            # Only channel infos: payments name their channel too (an audit: `history` put
            # its entries here, and the toolbar failed on them every second for good).
            with self.lock:
                self.channels.update({v["channelId"]: v for v in value})
        if (args.command, getattr(args, "action", None)) == ("peer", "add"):
            with self.lock:
                self.peers.append(str(value.get("alias")))

    def help(self, topic: list[str]) -> None:
        """`help` and `help COMMAND`."""
        if topic:
            parser: argparse.ArgumentParser = self.parser
            for word in topic:
                subs = subcommands(parser)
                if word not in subs:
                    self.say(f"{self.style.bad('error:')} no command {' '.join(topic)}")
                    return
                parser = subs[word]
            self.say(parser.format_help().rstrip())
            return
        rows = [[self.style.paint(cmd, "bold"), text]
                for cmd, text in command_summaries(self.parser)]
        self.say("commands (Tab completes; `help COMMAND` or `COMMAND --help` explains one):\n"
                 + render.table(["COMMAND", "WHAT"], rows, self.style) +
                 "\nCHANNEL may be an ID prefix (0x12ab) or the alias of a peer with one open "
                 "channel. Proposals and updates pushed by the node are printed as they come; "
                 "`accept` / `reject` answer the latest.")

    def show_pending(self) -> None:
        """`pending`: what awaits an answer."""
        live = self.live_pending()
        if not live:
            self.say("nothing awaits your answer")
            return
        now = self._node_now()
        rows = []
        for p in live:
            expires = "" if not isinstance(p.expiry, (int, float)) or now is None else \
                render.seconds_text(p.expiry - now)
            what = p.push.get("kind") or p.push.get("type") or "channel"
            rows.append([p.kind, self.style.ident(short_id(p.id)), p.peer,
                         short_id(p.channel_id) if p.channel_id else "", str(what), expires])
        self.say(render.table(["KIND", "ID", "FROM", "CHANNEL", "WHAT", "EXPIRES IN"], rows,
                              self.style))

    def show_jobs(self) -> None:
        """`jobs`: commands still running."""
        with self.lock:
            jobs = [j for j in self.jobs if not j.done.is_set()]
        if not jobs:
            self.say("no commands running")
            return
        self.say(render.table(["JOB", "COMMAND", "WAITING FOR", "FOR"], [
            [str(j.number or "-"), j.title, j.status or "the node", f"{j.elapsed()} s"]
            for j in jobs
        ], self.style))

    # -- progress --------------------------------------------------------------------------------

    def poll_progress(self) -> None:
        """Every second: ask what each long job waits for; print it when there is no toolbar."""
        while not self.closing:
            time.sleep(1.0)
            with self.lock:
                jobs = [j for j in self.jobs if j.status_of is not None and not j.done.is_set()
                        and j.session not in self.ended_sessions]
            for job in jobs:
                assert job.status_of is not None
                try:
                    job.status = job.status_of()
                except Exception:
                    continue  # the node is busy: keep the last status
                if self.toolbar_visible or job.done.is_set():
                    continue
                if not job.backgrounded and self.interactive:
                    continue
                text, when = job.last_line
                now = time.monotonic()
                if changed_shape(job.status) != text or now - when >= PROGRESS_EVERY:
                    job.last_line = (changed_shape(job.status), now)
                    number = f"[{job.number}] " if job.number else ""
                    self.say(self.style.dim(f"… {number}{job.title}: {job.status} "
                                            f"({job.elapsed()} s)"))

    def toolbar(self) -> str:
        """The bottom toolbar: where we are, what awaits an answer, what is running."""
        with self.lock:
            live = [c for c in self.channels.values() if c.get("phase") != "closed"]
            waiting = len(self.pending)
            jobs = [j for j in self.jobs if j.status_of is not None and not j.done.is_set()]
        # The node's address only while there is room for it.
        parts = [] if jobs else [self.node_label]
        parts.append(f"session {self.label}" if self.label else "no session")
        if self.label:
            parts.append(plural(len(live), "channel"))
        if waiting:
            parts.append(f"{waiting} awaiting your answer")
        for job in jobs:
            parts.append(f"{job.title}: {job.status} ({job.elapsed()} s)")
        return " " + " · ".join(parts)

    def prompt_text(self) -> str:
        """`alice> `, or `perund> ` without a session."""
        return f"{self.label or 'perund'}> "


def _cut_by_a_close(exc: BaseException) -> bool:
    """Whether `exc` may be what a call gets when its session closes under it: the peer's
    answer cut short (101), the session not found (201), its credential refused."""
    if isinstance(exc, AuthFailed):
        return True
    if not isinstance(exc, ApiError):
        return False
    data = exc.error.get("data")
    return exc.code == 101 or (exc.code == 201 and isinstance(data, dict)
                               and data.get("type") == "session")


def _is_channel(value: object) -> bool:
    """Whether a command's result is a channel info (and not, say, a payment naming one)."""
    return isinstance(value, dict) and "channelId" in value and "phase" in value \
        and "balances" in value
