"""Node configuration: read from YAML, validated completely, every error reported at once.

The node reads its configuration and never writes it (docs/conventions.md §9). Each key is
documented with its default in `etc/perund.yaml`; this module is the single source of truth for
names, types and defaults. Validation collects every problem before it fails, so an operator fixes
a file in one pass instead of one error per start.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from twisted.logger import Logger

from perund.api.connections import ApiLimits
from perund.api.credentials import DEFAULT_CHANGES_PER_SECOND
from perund.chain.urls import shown_url
from perund.channel.types import Address, hex_address
from perund.config_values import (
    address_value,
    duration_at_least,
    folder_list,
    int_at_least,
    non_empty_text,
    one_of,
    origin_list,
    plain_text,
    positive_duration,
    size_at_least,
)
from perund.config_values import check_listen as check_listen
from perund.config_values import parse_duration as parse_duration
from perund.config_values import parse_size as parse_size
from perund.contacts.strict_yaml import read_yaml_file
from perund.errors import InvalidConfig
from perund.peer.admission import PeerLimits
from perund.safe_files import unknown_key

log = Logger(namespace="perund.config")

_SYMBOL = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,15}$")


@dataclass(frozen=True)
class LogConfig:
    """Where and how the node logs."""

    level: str = "info"
    format: str = "text"
    file: str = ""


@dataclass(frozen=True)
class ApiConfig:
    """The JSON-RPC / WebSocket listener."""

    listen: str = "tcp:50001:interface=127.0.0.1"
    token_file: str = ""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins (`https://host:port`) whose WebSocket upgrades are accepted; a request
    with any other `Origin` is refused."""


@dataclass(frozen=True)
class Limits:
    """What one client, user or peer may hold of the node (docs/security.md): the node config's
    flat `limits` keys. The API's and the peer port's own limit types hold the defaults."""

    api_connections: int = ApiLimits.max_connections
    api_connections_per_session: int = ApiLimits.connections_per_session
    api_request_timeout: float = ApiLimits.request_timeout
    api_idle_timeout: float = ApiLimits.idle_timeout
    api_body_size: int = ApiLimits.max_body
    api_calls_in_flight: int = ApiLimits.calls_in_flight
    ws_subscriptions: int = ApiLimits.subscriptions_per_socket
    session_subscriptions: int = ApiLimits.subscriptions_per_session
    ws_send_buffer: int = ApiLimits.socket_send_buffer
    api_session_buffer: int = ApiLimits.session_buffer
    api_credential_changes: int = DEFAULT_CHANGES_PER_SECOND
    """Credential changes (mints, revocations) one session may make a second, after a burst
    of 64: each rewrites the node's sessions file."""
    peer_handshakes: int = PeerLimits.handshakes
    peer_handshakes_per_host: int = PeerLimits.handshakes_per_host
    peer_connections_per_host: int = PeerLimits.connections_per_host
    peer_strangers: int = PeerLimits.strangers
    peer_refusals: int = PeerLimits.refusals
    """Refused messages a peer may send in `peer_refusal_window` before its connections are
    dropped and refused for that long."""
    peer_refusal_window: float = PeerLimits.refusal_window
    min_free_disk: int = 100 * 1024 * 1024
    """Below this much free space on a session's store disk, the session takes no payments
    (perund.disk_guard)."""
    payment_history_size: int = 1024 * 1024 * 1024
    """The most a session's payment archive keeps; past it the oldest payments go, about half
    of it at a time (perund.storage.archive)."""
    closed_channel_retention: float = 7 * 24 * 3600.0
    """How long a channel stays among a session's channels (in memory, in `channel_list`)
    after it closed; then it retires to its store's file (perund.session.retirement)."""

    def api(self) -> ApiLimits:
        """The API's limits."""
        return ApiLimits(max_connections=self.api_connections,
                         connections_per_session=self.api_connections_per_session,
                         request_timeout=self.api_request_timeout,
                         idle_timeout=self.api_idle_timeout, max_body=self.api_body_size,
                         calls_in_flight=self.api_calls_in_flight,
                         subscriptions_per_socket=self.ws_subscriptions,
                         subscriptions_per_session=self.session_subscriptions,
                         socket_send_buffer=self.ws_send_buffer,
                         session_buffer=self.api_session_buffer)

    def peer(self) -> PeerLimits:
        """A session's peer-port limits."""
        return PeerLimits(handshakes=self.peer_handshakes,
                          handshakes_per_host=self.peer_handshakes_per_host,
                          connections_per_host=self.peer_connections_per_host,
                          strangers=self.peer_strangers, refusals=self.peer_refusals,
                          refusal_window=self.peer_refusal_window)


@dataclass(frozen=True)
class TokenConfig:
    """One configured ERC20 token: where it is and how many decimals its amounts have."""

    address: Address
    decimals: int


@dataclass(frozen=True)
class ChainConfig:
    """Which chain and contracts the node uses; an empty url means the embedded dev chain."""

    url: str = ""
    id: int | None = None
    adjudicator: Address | None = None
    assets: Mapping[str, TokenConfig] = field(default_factory=dict)
    """The ERC20 tokens channels may hold, by symbol (ETH is built in), in the file's order."""
    confirmations: int = 0
    poll_interval: float = 1.0
    block_time: float = 12.0
    """Seconds between blocks, for the challenge-duration safety margin
    (docs/specification.md §4)."""


@dataclass(frozen=True)
class Timeouts:
    """Time limits in seconds."""

    chain_connect: float = 10.0
    tx: float = 60.0
    response: float = 60.0
    peer_dial: float = 10.0
    peer_request: float = 10.0
    funding: float = 600.0
    """How long to wait for the peer's deposit before getting ours back through a dispute."""


@dataclass(frozen=True)
class SessionsConfig:
    """Where the files of the sessions users open may come from (docs/security.md)."""

    config_dirs: tuple[Path, ...] = ()
    """Folders that session configs, and every file they name, must lie in (resolved, symlinks
    included); none: `session_open` is refused. The node's data_dir is never allowed."""
    open_timeout: float = 10.0
    """How long reading a session's files may take before `session_open` gives up."""


DATA_DIR_LOCK = "node.lock"
"""The file in data_dir a running node holds an exclusive flock on (its pid inside)."""


@dataclass(frozen=True)
class NodeConfig:
    """The whole node configuration."""

    data_dir: Path = Path("data")
    log: LogConfig = field(default_factory=LogConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    chain: ChainConfig = field(default_factory=ChainConfig)
    timeouts: Timeouts = field(default_factory=Timeouts)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    limits: Limits = field(default_factory=Limits)
    path: Path | None = None
    """The file this config was read from (for messages), if any."""
    fresh_chain: bool = False
    """Command line only (`--fresh-chain`): set the embedded chain's saved state aside."""
    accept_lost_channels: bool = False
    """Command line only (`--accept-lost-channels`): start although the chain lacks what
    restored channels hold, marking those channels lost instead of refusing to start."""

    @property
    def token_path(self) -> Path:
        """The API token file: `api.token_file`, or `api.token` in the data directory."""
        if self.api.token_file:
            return Path(self.api.token_file)
        return self.data_dir / "api.token"


class _Collector:
    """Gathers every configuration problem of one file."""

    def __init__(self) -> None:
        self.problems: list[dict[str, Any]] = []

    def add(self, name: str, value: object, requirement: str) -> None:
        self.problems.append({"name": name, "value": _shown(value), "requirement": requirement})

    def take(self, section: Mapping[str, Any], prefix: str, key: str, convert: Callable[[Any], Any],
             default: Any, requirement: str, shown: Callable[[Any], object] = lambda v: v) -> Any:
        """`convert(section[key])`, or `default` when absent or refused (then a problem is
        added, with the value as `shown` makes it: a secret's form, for one)."""
        if key not in section or section[key] is None:
            return default
        raw = section[key]
        try:
            return convert(raw)
        except (TypeError, ValueError) as exc:
            detail = str(exc) or requirement
            self.add(f"{prefix}{key}", shown(raw), detail if detail != requirement else requirement)
            return default

    def unknown(self, section: Mapping[str, Any], prefix: str, known: set[str]) -> None:
        for key in section:
            if key not in known:
                self.add(f"{prefix}{key}", section[key], unknown_key(key, known))


def _shown(value: object) -> object:
    """The value as it may appear in an error message (short, JSON-friendly). A mapping or a
    list is named, not rendered: YAML aliases can make a small file a huge one to print."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value if not isinstance(value, str) or len(value) < 200 else value[:200] + "..."
    if isinstance(value, Mapping):
        return f"(a mapping of {len(value)} keys)"
    if isinstance(value, list | tuple):
        return f"(a list of {len(value)} items)"
    return f"(a {type(value).__name__})"


def _section(raw: Mapping[str, Any], key: str, problems: _Collector) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.add(key, value, "a mapping of keys")
        return {}
    return value


MIN_CLOSED_CHANNEL_RETENTION: Final = 15 * 60.0
"""The shortest `limits.closed_channel_retention`."""

CHAIN_URL_ENV = "PERUND_CHAIN_URL"
"""The environment variable that may give chain.url (for `twistd perund` and `perund deploy`):
a hosted node's API key stays off the command line, where every local user can read it."""

API_LISTEN_EXAMPLE = "tcp:50001:interface=127.0.0.1"


def _limits(raw: Mapping[str, Any], problems: _Collector) -> Limits:
    kinds: dict[str, Callable[[Any], Any]] = {}
    defaults = Limits()
    for name, default in vars(defaults).items():
        if name == "closed_channel_retention":
            # Past any reorganisation a chain has had: a retired channel's conclusion is
            # no longer looked after (docs/storage.md, "Retired channels").
            kinds[name] = duration_at_least(MIN_CLOSED_CHANNEL_RETENTION, "15m")
        elif isinstance(default, float):
            kinds[name] = positive_duration
        elif name == "payment_history_size":
            # An archiving appends one compaction's payments at once (up to about 1 MiB):
            # a smaller limit would keep only that batch.
            kinds[name] = size_at_least(1 << 20, "1MiB")
        elif name.endswith(("_size", "_buffer", "_disk")):
            kinds[name] = parse_size
        elif name == "api_calls_in_flight":
            kinds[name] = int_at_least(2)  # read-only credentials get half: at least one
        else:
            kinds[name] = int_at_least(1)
    problems.unknown(raw, "limits.", set(kinds))
    limits = Limits(**{name: problems.take(raw, "limits.", name, convert,
                                           getattr(defaults, name), "")
                       for name, convert in kinds.items()})
    if limits.api_session_buffer < limits.api_body_size + limits.ws_send_buffer:
        # Else one WebSocket of a session could not take the largest message while replies
        # wait for it: its client would be dropped for using what the other limits allow.
        problems.add("limits.api_session_buffer", limits.api_session_buffer,
                     "at least limits.api_body_size + limits.ws_send_buffer "
                     f"({limits.api_body_size + limits.ws_send_buffer} bytes)")
    return limits


MAX_TOKEN_DECIMALS = 77
"""10**77 < 2**256: a token with more decimals could not express one unit in a uint256."""


def _decimals(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 0 <= value <= MAX_TOKEN_DECIMALS:
        raise ValueError(f"an integer in 0..{MAX_TOKEN_DECIMALS} (the token's decimals())")
    return value


def _assets(raw: object, problems: _Collector) -> dict[str, TokenConfig]:
    """`chain.assets`: symbol -> {address, decimals}. ETH is built in and cannot be redefined;
    no two tokens share a symbol (in any letter case) or an address."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.add("chain.assets", raw, "a mapping of symbol to {address, decimals}")
        return {}
    assets: dict[str, TokenConfig] = {}
    symbols: dict[str, str] = {}
    addresses: dict[Address, str] = {}
    for symbol, entry in raw.items():
        name = f"chain.assets.{symbol}"
        if not isinstance(symbol, str) or not _SYMBOL.match(symbol):
            problems.add(name, symbol, "a symbol of 1-16 letters and digits, starting with a "
                                       "letter")
            continue
        if symbol.upper() == "ETH":
            problems.add(name, symbol, "ETH is built in and cannot be redefined")
            continue
        if symbol.upper() in symbols:
            problems.add(name, symbol, f"the symbol {symbols[symbol.upper()]} is defined "
                                       "already (symbols must differ in more than letter case)")
            continue
        symbols[symbol.upper()] = symbol
        if not isinstance(entry, Mapping):
            problems.add(name, entry, "a mapping with the token's address and decimals")
            continue
        problems.unknown(entry, f"{name}.", {"address", "decimals"})
        missing = [key for key in ("address", "decimals") if entry.get(key) is None]
        for key in missing:
            problems.add(f"{name}.{key}", None, "required")
        address = problems.take(entry, f"{name}.", "address", address_value, None, "")
        decimals = problems.take(entry, f"{name}.", "decimals", _decimals, None, "")
        if address is None or decimals is None:
            continue
        if address == Address(bytes(20)):
            problems.add(f"{name}.address", hex_address(address),
                         "a token's address (the zero address stands for ETH)")
        elif address in addresses:
            problems.add(f"{name}.address", hex_address(address),
                         f"an address no other symbol has ({addresses[address]} has it)")
        else:
            addresses[address] = symbol
            assets[symbol] = TokenConfig(address, decimals)
    return assets


def _chain_url(value: Any) -> str:
    # The node's chain client speaks JSON-RPC over HTTP(S) only (perund.chain.jsonrpc).
    if not isinstance(value, str):
        raise ValueError("an http(s):// URL, or empty for the embedded chain")
    if value and not re.match(r"^https?://\S+$", value):
        raise ValueError("an http(s):// URL, or empty for the embedded chain")
    return value


def parse_node_config(raw: object, base_dir: Path | None = None) -> NodeConfig:
    """Validate a parsed YAML document; raise one InvalidConfig listing every problem."""
    problems = _Collector()
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InvalidConfig("invalid node config: the top level must be a mapping of keys",
                            problems=[{"name": "", "value": _shown(raw),
                                       "requirement": "a mapping"}])
    problems.unknown(raw, "", {"data_dir", "log", "api", "chain", "timeouts", "sessions",
                               "limits"})
    base = base_dir or Path(".")

    data_dir = problems.take(raw, "", "data_dir", non_empty_text, "data", "a directory path")

    log_raw = _section(raw, "log", problems)
    problems.unknown(log_raw, "log.", {"level", "format", "file"})
    log = LogConfig(
        level=problems.take(log_raw, "log.", "level",
                            one_of("debug", "info", "warn", "error", "critical"), "info", ""),
        format=problems.take(log_raw, "log.", "format", one_of("text", "json"), "text", ""),
        file=problems.take(log_raw, "log.", "file", plain_text, "", "a file path or empty"),
    )

    api_raw = _section(raw, "api", problems)
    problems.unknown(api_raw, "api.", {"listen", "token_file", "allowed_origins"})
    api = ApiConfig(
        listen=problems.take(api_raw, "api.", "listen",
                             lambda value: check_listen(value, API_LISTEN_EXAMPLE),
                             ApiConfig.listen, "an endpoint string"),
        token_file=problems.take(api_raw, "api.", "token_file", plain_text, "", "a file path"),
        allowed_origins=problems.take(api_raw, "api.", "allowed_origins", origin_list, (), ""),
    )

    chain_raw = _section(raw, "chain", problems)
    problems.unknown(chain_raw, "chain.", {"url", "id", "adjudicator", "assets", "confirmations",
                                           "poll_interval", "block_time"})
    assets = _assets(chain_raw.get("assets"), problems)
    chain = ChainConfig(
        # A chain URL may carry an API key or a password: a refused one is quoted without.
        url=problems.take(chain_raw, "chain.", "url", _chain_url, "", "",
                          lambda v: shown_url(v) if isinstance(v, str) else v),
        id=problems.take(chain_raw, "chain.", "id", int_at_least(1), None, ""),
        adjudicator=problems.take(chain_raw, "chain.", "adjudicator", address_value, None, ""),
        assets=assets,
        confirmations=problems.take(chain_raw, "chain.", "confirmations", int_at_least(0), 0, ""),
        poll_interval=problems.take(chain_raw, "chain.", "poll_interval", positive_duration,
                                    1.0, ""),
        block_time=problems.take(chain_raw, "chain.", "block_time", positive_duration,
                                 12.0, ""),
    )
    if chain.url and chain.adjudicator is None and "adjudicator" not in chain_raw:
        problems.add("chain.adjudicator", None,
                     "the Adjudicator's address is required with chain.url")
    if not chain.url and chain.confirmations:
        # The embedded chain mines a block per transaction and none otherwise: the blocks a
        # deposit or a registration waits under would never come.
        problems.add("chain.confirmations", chain.confirmations,
                     "0 on the embedded chain (it mines a block only per transaction)")

    timeouts_raw = _section(raw, "timeouts", problems)
    names = ("chain_connect", "tx", "response", "peer_dial", "peer_request", "funding")
    problems.unknown(timeouts_raw, "timeouts.", set(names))
    defaults = Timeouts()
    timeouts = Timeouts(**{
        name: problems.take(timeouts_raw, "timeouts.", name, positive_duration,
                            getattr(defaults, name), "")
        for name in names
    })

    sessions_raw = _section(raw, "sessions", problems)
    problems.unknown(sessions_raw, "sessions.", {"config_dirs", "open_timeout"})
    config_dirs = problems.take(sessions_raw, "sessions.", "config_dirs", folder_list(base), (),
                                "a list of folder paths")
    sessions = SessionsConfig(
        config_dirs=config_dirs,
        open_timeout=problems.take(sessions_raw, "sessions.", "open_timeout",
                                   positive_duration, SessionsConfig.open_timeout, ""))

    limits = _limits(_section(raw, "limits", problems), problems)

    if problems.problems:
        raise InvalidConfig(f"invalid node config: {_lines(problems.problems)}",
                            problems=problems.problems)
    data_path = Path(data_dir)
    if not data_path.is_absolute():
        data_path = base / data_path
    # Every relative path of the file is relative to the file's folder (etc/perund.yaml).
    if api.token_file and not Path(api.token_file).is_absolute():
        api = replace(api, token_file=str(base / api.token_file))
    if log.file and not Path(log.file).is_absolute():
        log = replace(log, file=str(base / log.file))
    return NodeConfig(data_dir=data_path, log=log, api=api, chain=chain, timeouts=timeouts,
                      sessions=sessions, limits=limits)


def _lines(problems: list[dict[str, Any]]) -> str:
    """The problems of a node config in one message: `name: requirement; ...`, each name with
    where its value came from when not from the file (`api.listen (from --api-listen)`)."""
    return "; ".join(
        f"{p['name'] or '(top)'}{' (from ' + p['source'] + ')' if 'source' in p else ''}: "
        f"{p['requirement']}" for p in problems)


def load_node_config(path: str | Path,
                     overrides: Mapping[str, Any] | None = None,
                     origins: Mapping[str, str] | None = None) -> NodeConfig:
    """Read and validate a node config file; relative paths in it are relative to its folder.
    `overrides` (`{"api": {"listen": ...}}`, from the command line) replace keys of the file
    before validation; `origins` names where each overriding key came from (`{"api.listen":
    "--api-listen"}`), so that a problem with it is not blamed on the file. Every problem is in
    one InvalidConfig whose message names the file."""
    file = Path(path)
    # The strict loader keeps 0x-addresses as text and reports keys defined twice.
    raw, duplicates = read_yaml_file(file, what="node config", field="config")
    if duplicates:
        raise InvalidConfig(
            f"node config {file} defines keys twice: "
            + ", ".join(f"{d.key} (lines {d.first_line} and {d.line})" for d in duplicates),
            problems=[{"name": str(d.key), "value": None,
                       "requirement": f"defined twice (lines {d.first_line} and {d.line})"}
                      for d in duplicates],
        )
    if raw is None or raw == {}:
        # Often a mistake (the wrong file, or one not saved yet), and a node with every
        # default looks just like a working one: say so where the operator looks first.
        log.warn("node config {file} is empty: every setting takes its default "
                 "(docs/configuration.md)", file=str(file))
    if overrides:
        raw = _merged(raw, overrides)
    try:
        config = parse_node_config(raw, base_dir=file.parent)
    except InvalidConfig as exc:
        problems = exc.data.get("problems") or []
        if origins and any(p["name"] in origins for p in problems):
            for problem in problems:
                if problem["name"] in origins:
                    problem["source"] = origins[problem["name"]]
            raise InvalidConfig(f"invalid node config {file}: {_lines(problems)}",
                                **exc.data) from None
        raise InvalidConfig(exc.message.replace("invalid node config:",
                                                f"invalid node config {file}:", 1),
                            **exc.data) from None
    return replace(config, path=file)


def _merged(raw: object, overrides: Mapping[str, Any]) -> object:
    """`raw` with the sections of `overrides` merged in (a non-mapping `raw` is left for the
    validation to report)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return raw
    merged = dict(raw)
    for key, value in overrides.items():
        section = merged.get(key)
        if isinstance(value, Mapping) and isinstance(section, Mapping):
            merged[key] = {**section, **value}
        else:
            merged[key] = value
    return merged
