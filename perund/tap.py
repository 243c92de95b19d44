"""`twistd perund` / `twist perund`: command-line options and the service they make.

The configuration is read and validated completely before the reactor starts: a bad file ends
the command with every problem listed, before anything listens or connects.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.logger import ILogObserver
from twisted.python import usage

from perund.config import CHAIN_URL_ENV, NodeConfig, load_node_config
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
            self["node_config"] = self._load()
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
