"""`twistd perund` / `twist perund`: command-line options and the service they make.

The configuration is read and validated completely before the reactor starts: a bad file ends
the command with every problem listed, before anything listens or connects.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.logger import ILogObserver
from twisted.python import usage

from perund.config import CHAIN_URL_ENV, DATA_DIR_LOCK, NodeConfig, load_node_config
from perund.errors import InvalidConfig


class Options(usage.Options):
    """Options of `twistd perund`."""

    synopsis = "--config FILE [--chain-url URL] [--api-listen ENDPOINT] [--data-dir DIR]"
    optFlags = [
        ["fresh-chain", None, "Embedded dev chain only: set its saved state aside and start a "
                              "new chain (the channels on the old one are lost with it)."],
        ["accept-lost-channels", None, "Start although the chain lacks the deposits or the "
                                       "contract of restored channels: mark them lost "
                                       "(phase chainLost) instead of refusing to start."],
    ]
    optParameters = [
        ["config", "c", None, "Node configuration file (YAML; see etc/perund.yaml); required."],
        ["chain-url", None, None, "Override chain.url (empty string: the embedded dev chain); "
                                  "else PERUND_CHAIN_URL, if set (keeps an API key out of ps)."],
        ["api-listen", None, None, "Override api.listen (a Twisted endpoint string)."],
        ["data-dir", None, None, "Override data_dir."],
    ]

    def postOptions(self) -> None:
        """Load and validate the configuration now, so errors end the command at once: one
        line on standard error and exit status 1 (not twistd's usage text, which would bury
        the line that matters)."""
        try:
            self["node_config"] = config = self._load()
            _refuse_what_is_taken(config)
        except InvalidConfig as exc:
            sys.stderr.write(f"perund: {exc.message}\n")
            sys.stderr.flush()
            raise SystemExit(1) from None

    def _load(self) -> NodeConfig:
        if not self["config"]:
            # Defaults taken silently from the working directory would start a node nobody
            # configured, with its data wherever the command happened to run.
            raise InvalidConfig(
                "no node config: give --config FILE (`perund generate DIR` writes "
                "DIR/perund.yaml; etc/perund.yaml documents every key)", name="config",
                value=None, requirement="--config FILE")
        overrides: dict[str, Any] = {}
        origins: dict[str, str] = {}
        chain_url, origin = self["chain-url"], "--chain-url"
        if chain_url is None:
            chain_url, origin = os.environ.get(CHAIN_URL_ENV) or None, CHAIN_URL_ENV
        if chain_url is not None:
            overrides.setdefault("chain", {})["url"] = chain_url
            origins["chain.url"] = origin
        if self["api-listen"] is not None:
            overrides.setdefault("api", {})["listen"] = self["api-listen"]
            origins["api.listen"] = "--api-listen"
        if self["data-dir"] is not None:
            # An empty one is left for the config check to refuse, as in the file.
            given = self["data-dir"]
            overrides["data_dir"] = str(Path(given).resolve()) if given.strip() else given
            origins["data_dir"] = "--data-dir"
        config = load_node_config(self["config"], overrides, origins)
        return replace(config, fresh_chain=bool(self["fresh-chain"]),
                       accept_lost_channels=bool(self["accept-lost-channels"]))


def _refuse_what_is_taken(config: NodeConfig) -> None:
    """InvalidConfig if another node holds `data_dir` or the API's TCP port is taken: looked
    at here, before twistd forks a daemon, so that the command fails with status 1 and the
    line on the terminal (after the fork it would only be in twistd.log). The node checks
    both again when it starts (something may take them meanwhile)."""
    from perund.locks import holder_of

    holder = holder_of(config.data_dir / DATA_DIR_LOCK)
    if holder is not None:
        raise InvalidConfig(f"data_dir {config.data_dir} is in use by another perund (pid "
                            f"{holder}); one node per data folder", name="data_dir",
                            value=str(config.data_dir))
    address = _tcp_address(config.api.listen)
    if address is None:
        return
    probe = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted listens
        probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InvalidConfig(f"api.listen {config.api.listen}: the port is in use by "
                                "another program", name="api.listen",
                                value=config.api.listen) from None
    finally:
        probe.close()


def _tcp_address(endpoint: str) -> tuple[str, int] | None:
    """(interface, port) of a TCP endpoint string, parsed as the config check parses it
    (`config_values.check_listen`); None for any other kind (checked when the node listens)."""
    from twisted.internet.endpoints import (
        TCP4ServerEndpoint,
        TCP6ServerEndpoint,
        serverFromString,
    )

    parse: Any = serverFromString  # untyped in Twisted; no reactor is needed to parse
    try:
        parsed = parse(None, endpoint)
    except Exception:  # the config check refuses it with its reason
        return None
    if not isinstance(parsed, TCP4ServerEndpoint | TCP6ServerEndpoint):
        return None
    return parsed._interface, parsed._port


def makeService(options: Options) -> IService:
    """The NodeService for the validated configuration (the only place using the global reactor),
    with the observer of twistd's standard-output log when `log.level`/`log.format` apply to it
    (perund.logs)."""
    from twisted.internet import reactor

    from perund.logs import standard_output_observer
    from perund.node import NodeService

    config: NodeConfig = options["node_config"]
    node = NodeService(reactor, config)
    observer = standard_output_observer(config.log, getattr(options, "parent", None))
    return IService(node if observer is None else _LoggingTo(node, observer))


class _LoggingTo(MultiService):
    """The node's service, carrying the observer twistd logs through: twistd takes an
    `ILogObserver` component of its application when it starts logging, just after the
    service joined the application."""

    # Any: zope interfaces do not type-check as protocols without the mypy-zope plugin.
    def __init__(self, node: Any, observer: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted leaves it untyped
        self.observer = observer
        node.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        """Join `parent` (twistd's application), setting the log observer on it."""
        parent.setComponent(ILogObserver, self.observer)
        super().setServiceParent(parent)  # type: ignore[no-untyped-call]
