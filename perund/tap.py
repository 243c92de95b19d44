"""`twistd perund` / `twist perund`: command-line options and the service they make.

The configuration is read and validated completely before the reactor starts: a bad file ends
the command with every problem listed, before anything listens or connects.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from perund.config import NodeConfig, load_node_config, parse_node_config
from perund.errors import InvalidConfig


class Options(usage.Options):
    """Options of `twistd perund`."""

    synopsis = "--config FILE [--chain-url URL] [--api-listen ENDPOINT] [--data-dir DIR]"
    optParameters = [
        ["config", "c", None, "Node configuration file (YAML; see etc/perund.yaml); required."],
        ["chain-url", None, None, "Override chain.url (empty string: the embedded dev chain)."],
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
        config = load_node_config(self["config"])
        base = Path(self["config"]).parent
        overrides: dict[str, Any] = {}
        if self["chain-url"] is not None:
            overrides.setdefault("chain", {})["url"] = self["chain-url"]
        if self["api-listen"] is not None:
            overrides.setdefault("api", {})["listen"] = self["api-listen"]
        if self["data-dir"] is not None:
            overrides["data_dir"] = str(Path(self["data-dir"]).resolve())
        if not overrides:
            return config
        return parse_node_config(_merge(_as_raw(config), overrides), base_dir=base)


def _as_raw(config: NodeConfig) -> dict[str, Any]:
    """The config back as a raw document, so overrides are validated like the file."""
    return {
        "data_dir": str(config.data_dir),
        "log": {"level": config.log.level, "format": config.log.format, "file": config.log.file},
        "api": {"listen": config.api.listen, "token_file": config.api.token_file},
        "chain": {
            "url": config.chain.url,
            "id": config.chain.id,
            "adjudicator": "0x" + config.chain.adjudicator.hex() if config.chain.adjudicator
            else None,
            "assets": {symbol: "0x" + address.hex() for symbol, address in
                       config.chain.assets.items()},
            "confirmations": config.chain.confirmations,
            "poll_interval": f"{config.chain.poll_interval}s",
            "block_time": f"{config.chain.block_time}s",
        },
        "timeouts": {name: f"{getattr(config.timeouts, name)}s" for name in
                     ("chain_connect", "tx", "response", "peer_dial", "peer_request",
                      "funding")},
        "sessions": {"config_dirs": [str(p) for p in config.sessions.config_dirs],
                     "open_timeout": f"{config.sessions.open_timeout}s"},
    }


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def makeService(options: Options) -> IService:
    """The NodeService for the validated configuration (the only place using the global reactor)."""
    from twisted.internet import reactor

    from perund.node import NodeService

    return IService(NodeService(reactor, options["node_config"]))
