"""Chain node URLs: how the node may show one, and the parts of one it sends.

A hosted node's URL carries its API key in the path or the query (`https://host/v3/KEY`), and
any URL may carry a user and a password: the node sends them to the chain node (or the proxy)
and shows only scheme, host and port anywhere else (`shown_url`).
"""

from __future__ import annotations

import base64
import urllib.parse


def shown_url(url: str) -> str:
    """`url` as the node may write it in a log line, an error or an API answer: scheme, host
    and port, and "/…" where a path or query was left out; never a user or a password."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "(a malformed URL)"
    if not parts.scheme or not host:
        return "(a malformed URL)" if url else ""
    shown = f"{parts.scheme}://{host_port(host, port)}"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        shown += "/…"
    return shown


def host_port(host: str, port: int | None) -> str:
    """`host:port` as a URL writes it (an IPv6 address in brackets; no port: the host)."""
    name = f"[{host}]" if ":" in host else host
    return name if port is None else f"{name}:{port}"


def basic_credentials(parts: urllib.parse.SplitResult) -> str | None:
    """The `Basic …` value of an Authorization (or Proxy-Authorization) header for the URL's
    `user:password@`; None without a user."""
    if parts.username is None:
        return None
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
