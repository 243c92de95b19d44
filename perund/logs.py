"""The node's log destination from its config: `log.file`, `log.format`, `log.level`.

twistd keeps logging to its own destination (standard output with `-n`, what systemd's journal
reads), every level, as text; a configured `log.file` gets the node's events too, as text or as
JSON lines, from the configured level up (`log.level` and `log.format` are the file's).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    jsonFileLogObserver,
    textFileLogObserver,
)

from perund.config import LogConfig

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
           "error": LogLevel.error, "critical": LogLevel.critical}


class LogFile:
    """An observer writing the node's log to `log.file` while it is started."""

    def __init__(self, config: LogConfig) -> None:
        self.config = config
        self.path = Path(config.file)  # the config resolved it against the config's folder
        self._stream: IO[str] | None = None
        self._observer: ILogObserver | None = None

    def start(self) -> None:
        """Open the file (appending) and start observing."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = self.path.open("a", encoding="utf-8")
        # Any: zope interfaces do not type-check as protocols without the mypy-zope plugin.
        inner: Any = (jsonFileLogObserver(self._stream) if self.config.format == "json"
                      else textFileLogObserver(self._stream))
        predicate: Any = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[self.config.level])
        observer: Any = FilteringLogObserver(inner, [predicate])
        self._observer = observer
        globalLogPublisher.addObserver(observer)

    def stop(self) -> None:
        """Stop observing and close the file."""
        if self._observer is not None:
            globalLogPublisher.removeObserver(self._observer)
            self._observer = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None
