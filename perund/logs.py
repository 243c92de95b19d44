"""The node's log destinations from its config: `log.file`, `log.format`, `log.level`.

Standard output, where twistd logs in the foreground (`-n`, what systemd's journal reads), gets
the node's events from `log.level` up in `log.format` (`standard_output_observer`); so does a
configured `log.file`. A destination chosen on twistd's own command line (`--logfile FILE`,
`--syslog`, `--logger`, or the daemon's default `twistd.log`) stays twistd's: every level, as
text.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    globalLogPublisher,
    jsonFileLogObserver,
    textFileLogObserver,
)

from perund.config import LogConfig

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
           "error": LogLevel.error, "critical": LogLevel.critical}

_QUIETED = ("autobahn",)
"""Libraries whose warnings are about clients (a WebSocket frame that is not UTF-8, one over
the size limit): one client could write a line per connection, some hundreds a second, past
every limit of the API's own log lines. Below error they are logged at debug only."""


class _ClientNoise:
    """An `ILogFilterPredicate`: drops the `_QUIETED` libraries' events below error unless
    the log shows debug."""

    def __init__(self, level: LogLevel) -> None:
        self._debug = level <= LogLevel.debug

    def __call__(self, event: Mapping[str, Any]) -> Any:  # a PredicateResult constant
        namespace = str(event.get("log_namespace", ""))
        if self._debug or not namespace.startswith(_QUIETED):
            return PredicateResult.maybe
        level = event.get("log_level")
        if level is not None and level >= LogLevel.error:
            return PredicateResult.maybe
        return PredicateResult.no


def _filtered(inner: Any, level: LogLevel) -> Any:
    # Any: zope interfaces do not type-check as protocols without the mypy-zope plugin.
    noise: Any = _ClientNoise(level)
    predicate: Any = LogLevelFilterPredicate(defaultLogLevel=level)
    return FilteringLogObserver(inner, [noise, predicate])


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
        observer: Any = _filtered(inner, _LEVELS[self.config.level])
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


def standard_output_observer(config: LogConfig,
                             twistd: Mapping[str, Any] | None) -> ILogObserver | None:
    """The observer of twistd's log to standard output, from `config.level` up in
    `config.format`, when twistd logs there (in the foreground without `--logfile`, or with
    `--logfile -`) and its command line chose no other logger; else None: twistd's own
    destination stays. `twistd` is twistd's options (None when not run by twistd)."""
    if twistd is None or twistd.get("logger") or twistd.get("syslog"):
        return None
    logfile = twistd.get("logfile")
    if not (logfile == "-" or (not logfile and twistd.get("nodaemon"))):
        return None
    inner: Any = (jsonFileLogObserver(sys.stdout) if config.format == "json"
                  else textFileLogObserver(sys.stdout))
    observer: ILogObserver = _filtered(inner, _LEVELS[config.level])
    return observer
