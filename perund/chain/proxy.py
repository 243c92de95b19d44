"""Whether the chain client goes through an HTTP proxy, and how: the environment's
`HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (either letter case), read as curl and requests read
them (docs/configuration.md, "The chain's URL").

An `https://` chain node is reached through a `CONNECT` tunnel, so the proxy sees only the host
and port, and TLS runs end to end; an `http://` one is sent to the proxy with the absolute URL.
A loopback chain node (the embedded dev chain, a local node) is never proxied: no proxy could
reach it.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from perund.chain.urls import basic_credentials, host_port, shown_url
from perund.errors import InvalidConfig


@dataclass(frozen=True, slots=True)
class ProxyRoute:
    """The proxy to connect to, what to tell it, and how logs name it."""

    host: str
    port: int
    shown: str
    """`http://host:port`: never the proxy's user or password."""
    headers: dict[str, str] = field(default_factory=dict)
    """`Proxy-Authorization`, when the proxy URL carries a user."""


def proxy_route(scheme: str, host: str) -> ProxyRoute | None:
    """The proxy the environment names for a chain node at `scheme://host`, or None.

    InvalidConfig for a proxy URL this client cannot use (not `http://`, no host, a bad port),
    naming the variable and never its password."""
    if _is_loopback(host):
        return None
    proxies = urllib.request.getproxies_environment()
    # Not in typeshed, but public in CPython (what urllib.request.proxy_bypass runs on POSIX).
    if urllib.request.proxy_bypass_environment(host, proxies):  # type: ignore[attr-defined]
        return None
    proxy = proxies.get(scheme)
    if not proxy:
        return None
    variable = f"{scheme.upper()}_PROXY"
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    try:
        port = parts.port or 80
    except ValueError:
        port = -1
    if parts.scheme != "http" or not parts.hostname or port < 0:
        raise InvalidConfig(f"{variable}: the chain client needs an http:// proxy with a host "
                            "and a valid port", name=variable, value=shown_url(proxy),
                            requirement="http://host:port")
    credentials = basic_credentials(parts)
    headers = {"Proxy-Authorization": credentials} if credentials is not None else {}
    return ProxyRoute(parts.hostname, port, f"http://{host_port(parts.hostname, port)}",
                      headers)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
