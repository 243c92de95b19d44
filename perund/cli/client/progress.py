"""Long waits made visible: what is being waited for, and for how long.

A `Long` command's call runs in a daemon thread; meanwhile its `status()` (which may ask the
node, e.g. `channel_get` for a closing channel) is shown every second: on a terminal as one line
redrawn in place, otherwise as a line whenever the status changes and every `every` seconds.
Calls that finish within `quiet_for` seconds show nothing.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from perund.cli.client.render import Style

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Background:
    """A call running in a daemon thread (a daemon, so ^C can leave it behind)."""

    def __init__(self, call: Callable[[], Any], name: str = "perund-cli-call") -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.started = time.monotonic()

        def run() -> None:
            try:
                self.result = call()
            except BaseException as exc:  # handed to the waiting thread, which reports it
                self.error = exc
            finally:
                self.done.set()

        threading.Thread(target=run, name=name, daemon=True).start()

    def elapsed(self) -> float:
        """Seconds since the call started."""
        return time.monotonic() - self.started

    def outcome(self) -> Any:
        """The call's result, or its exception raised."""
        if self.error is not None:
            raise self.error
        return self.result


def safe_status(status: Callable[[], str], last: str) -> str:
    """`status()`, or `last` when asking fails (the node is busy: the wait goes on)."""
    try:
        return status()
    except Exception:
        return last


def changed_shape(status: str) -> str:
    """`status` without its numbers: a countdown is not news worth a line of its own."""
    return re.sub(r"[0-9]+", "#", status)


class ProgressLine:
    """Shows `title: status (N s)` on `stream`."""

    def __init__(self, stream: TextIO, tty: bool, style: Style, every: float = 10.0) -> None:
        self.stream = stream
        self.tty = tty
        self.style = style
        self.every = every
        self._shown = False
        self._last_text = ""
        self._last_time = 0.0
        self._frame = 0

    def show(self, title: str, status: str, elapsed: float) -> None:
        """Report the wait, `elapsed` seconds in."""
        text = f"{title}: {status}"
        if self.tty:
            self._frame += 1
            spin = SPINNER[self._frame % len(SPINNER)]
            seconds = f"({int(elapsed)} s)"
            # A line wider than the terminal wraps, and the redraw then clears only its last
            # row: the rows above would pile up, one per second.
            room = shutil.get_terminal_size().columns - len(seconds) - 4
            if len(text) > room:
                text = text[:max(room - 1, 0)] + "…"
            self.stream.write(f"\r\x1b[K{self.style.warn(spin)} {text} "
                              f"{self.style.dim(seconds)}")
            self.stream.flush()
            self._shown = True
            return
        now = time.monotonic()
        shape = changed_shape(text)
        if shape != self._last_text or now - self._last_time >= self.every:
            self.stream.write(f"… {text} ({int(elapsed)} s)\n")
            self.stream.flush()
            self._last_text, self._last_time = shape, now

    def clear(self) -> None:
        """Remove the in-place line (a terminal) before the result is printed."""
        if self.tty and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


def wait_with_progress(title: str, call: Callable[[], Any], status: Callable[[], str],
                       progress: ProgressLine, quiet_for: float = 1.0,
                       tick: float = 1.0) -> Any:
    """Run `call` in the background, showing progress until it returns; its result (or its
    exception raised). KeyboardInterrupt stops the waiting, not the node's work."""
    job = Background(call)
    last = ""
    try:
        if job.done.wait(quiet_for):
            return job.outcome()
        while True:
            last = safe_status(status, last or "waiting")
            progress.show(title, last, job.elapsed())
            if job.done.wait(tick):
                break
    finally:
        progress.clear()
    return job.outcome()
