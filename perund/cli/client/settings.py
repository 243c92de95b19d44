"""Where the node is and how to prove who we are: --node, the token, --session, the state dir.

Options win over the environment: `--node` over PERUND_NODE; `--token-file` over PERUND_TOKEN
(the token itself) over PERUND_TOKEN_FILE; `--session` over PERUND_SESSION.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from perund.cli.client.errors import TokenError, UsageError
from perund.tokens import TOKEN_FORM_TEXT, is_token

DEFAULT_NODE = "127.0.0.1:50001"
SESSION_PATTERN = re.compile(r"^0x[0-9a-fA-F]{32}$")


@dataclass(frozen=True)
class NodeAddress:
    """host and port of the node's API listener."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_node(text: str) -> NodeAddress:
    """`HOST:PORT`, `[IPv6]:PORT`, `:PORT` or `PORT` (host 127.0.0.1); http:// is tolerated."""
    value = text.strip()
    if "@" in value:
        # user:password@host: never echoed (it may hold a password), and never needed.
        raise UsageError("bad node address: no user or password in it (the CLI authenticates "
                         "with the API token): expected HOST:PORT")
    scheme, found, rest = value.partition("://")
    if found:
        if scheme.lower() not in ("http", "ws"):
            raise UsageError(f"bad node address {text!r}: the CLI speaks plain http to the "
                             "node's API (no https or other schemes): expected HOST:PORT")
        value = rest.split("/", 1)[0]
    host, port = "127.0.0.1", value
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or not value[end + 1:].startswith(":"):
            raise UsageError(f"bad node address {text!r}: expected HOST:PORT")
        host, port = value[1:end], value[end + 2:]
    elif ":" in value:
        host, port = value.rsplit(":", 1)
        host = host or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"bad node address {text!r}: expected HOST:PORT with a port 1-65535")
    if not _HOST.fullmatch(host):
        raise UsageError(f"bad node address {text!r}: {host!r} is not a host name or an IP "
                         "address")
    return NodeAddress(host, int(port))


_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+(%[A-Za-z0-9]+)?")
"""A host name, an IPv4 address, or an IPv6 address (its brackets already taken off)."""


def node_of(option: str | None, env: Mapping[str, str]) -> NodeAddress:
    """The node address from --node, PERUND_NODE, or the default; a bad one is refused
    naming where it came from (a stale PERUND_NODE is not on the command line)."""
    if option:
        source, text = "--node", option
    elif env.get("PERUND_NODE"):
        source, text = "PERUND_NODE", env["PERUND_NODE"]
    else:
        return parse_node(DEFAULT_NODE)
    try:
        return parse_node(text)
    except UsageError as exc:
        raise UsageError(f"{source}: {exc.message}") from None


def read_token_file(path: str) -> str:
    """The token in `path` (surrounding whitespace dropped); TokenError if unusable."""
    try:
        token = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TokenError(f"cannot read the token file {path}: "
                         f"{(exc.strerror or str(exc)).lower()}") from None
    except UnicodeDecodeError:
        raise TokenError(f"the token file {path} is not text") from None
    if not token:
        raise TokenError(f"the token file {path} is empty")
    if not is_token(token):
        # Checked before anything is sent: a password file given by mistake must not travel
        # to whatever --node names.
        raise TokenError(f"the token file {path} does not hold an API token (a token is "
                         f"{TOKEN_FORM_TEXT}); is it the right file?")
    return token


def token_of(option: str | None, env: Mapping[str, str]) -> str:
    """The API token from --token-file, PERUND_TOKEN, PERUND_TOKEN_FILE; TokenError if none."""
    path = token_file_of(option, env)
    if path is not None:
        return read_token_file(path)
    if env.get("PERUND_TOKEN", "").strip():
        return env["PERUND_TOKEN"].strip()
    raise TokenError("no API token: give --token-file PATH (the node's api.token_file, "
                     "e.g. data/api.token) or set PERUND_TOKEN_FILE or PERUND_TOKEN")


def token_file_of(option: str | None, env: Mapping[str, str]) -> str | None:
    """The file the API token comes from (--token-file, else PERUND_TOKEN_FILE unless
    PERUND_TOKEN is set); None when it is PERUND_TOKEN's, or there is none."""
    if option:
        return option
    if env.get("PERUND_TOKEN", "").strip():
        return None
    return env.get("PERUND_TOKEN_FILE") or None


def session_of(option: str | None, env: Mapping[str, str]) -> str | None:
    """The session ID from --session or PERUND_SESSION (checked, 0x added if missing)."""
    value = option or env.get("PERUND_SESSION") or None
    if value is None:
        return None
    return check_session_id(value)


def check_session_id(value: str) -> str:
    """`value` as a 0x session ID; UsageError if it is not one."""
    text = value.strip()
    if not text.startswith("0x"):
        text = "0x" + text
    if not SESSION_PATTERN.match(text):
        raise UsageError(f"bad session ID {value!r}: expected 0x and 32 hex digits "
                         "(what `session open` printed)")
    return text.lower()


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the CLI keeps its history: $XDG_STATE_HOME/perund or ~/.local/state/perund."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "perund"
