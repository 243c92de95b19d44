"""The chain client through an HTTP proxy (HTTP_PROXY, HTTPS_PROXY, NO_PROXY): an https://
chain node inside a CONNECT tunnel with TLS end to end, an http:// one by absolute URL, loopback
and NO_PROXY hosts directly, and proxy URLs it cannot use refused without their password."""

from __future__ import annotations

import base64
import datetime
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from perund.chain.abi import ContractCodec
from perund.chain.anvil import rpc_call
from perund.chain.artifact import load_artifact
from perund.chain.client import ChainClient
from perund.chain.jsonrpc import HttpTransport
from perund.chain.proxy import proxy_route
from perund.errors import ChainNotReachable, InvalidConfig

from .http_proxy import http_proxy
from .scripted_node import Reply, answer, scripted_node

PROXY_AUTH = "Basic " + base64.b64encode(b"proxyuser:PROXYPASS").decode()


@pytest.fixture(autouse=True)
def _no_proxy_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def _chain_id(request: Any, use: int) -> Reply:
    return 200, answer(request, "0x7a69")


def _with_credentials(proxy_url: str) -> str:
    return proxy_url.replace("http://", "http://proxyuser:PROXYPASS@")


def test_an_http_chain_node_is_reached_through_the_proxy_by_absolute_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with scripted_node(_chain_id) as node, \
            http_proxy({"chain.test": ("127.0.0.1", int(node.url.rsplit(":", 1)[1]))},
                       PROXY_AUTH) as proxy:
        monkeypatch.setenv("HTTP_PROXY", _with_credentials(proxy.url))
        transport = HttpTransport("http://chain.test:8545/v3/KEY", timeout=5)
        assert transport.via == proxy.url  # what the log says: never the proxy's password
        client = ChainClient(transport, ContractCodec(load_artifact().abi))
        assert client.chain_id_blocking() == 31337
        assert client.chain_id_blocking() == 31337
        transport.close()
    assert proxy.seen == [("POST", "http://chain.test:8545/v3/KEY", PROXY_AUTH)] * 2
    assert node.targets == [("/v3/KEY", None)] * 2  # the proxy's credentials stop at the proxy


def test_an_https_chain_node_is_reached_through_a_connect_tunnel(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    context = _tls_for("chain.test", tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))  # trust the test's CA
    with scripted_node(_chain_id, tls=context) as node, \
            http_proxy({"chain.test": ("127.0.0.1", int(node.url.rsplit(":", 1)[1]))},
                       PROXY_AUTH) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", _with_credentials(proxy.url))
        transport = HttpTransport("https://chain.test/rpc/KEY", timeout=5)
        client = ChainClient(transport, ContractCodec(load_artifact().abi))
        assert client.chain_id_blocking() == 31337
        assert client.chain_id_blocking() == 31337  # the same tunnel, kept alive
        transport.close()
    # The proxy saw the host and port only: the path (and its key) went inside TLS.
    assert proxy.seen == [("CONNECT", "chain.test:443", PROXY_AUTH)]
    assert node.targets == [("/rpc/KEY", None)] * 2


def test_a_proxy_that_refuses_the_tunnel_makes_the_chain_not_reachable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with http_proxy({}, PROXY_AUTH) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)  # no credentials: 407
        client = ChainClient(HttpTransport("https://chain.test/rpc", timeout=5),
                             ContractCodec(load_artifact().abi))
        with pytest.raises(ChainNotReachable) as raised:
            client.chain_id_blocking()
    assert "407" in str(raised.value)


def test_loopback_and_no_proxy_hosts_are_reached_directly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "internal.example,.corp.example")
    with scripted_node(_chain_id) as node:
        transport = HttpTransport(node.url, timeout=5)
        assert transport.via is None
        assert transport.request("eth_chainId", []) == "0x7a69"
        transport.close()
    for host in ("localhost", "127.0.0.1", "::1", "internal.example", "node.corp.example"):
        assert proxy_route("https", host) is None, host
    assert proxy_route("https", "mainnet.example") is not None


@pytest.mark.parametrize("proxy", [
    "socks5://proxyuser:PROXYPASS@proxy.example:1080",
    "http://proxyuser:PROXYPASS@proxy.example:99999",
    "https://proxyuser:PROXYPASS@proxy.example:3128",
])
def test_a_proxy_the_client_cannot_use_is_refused_without_its_password(
        monkeypatch: pytest.MonkeyPatch, proxy: str) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    with pytest.raises(InvalidConfig) as refused:
        HttpTransport("https://mainnet.example/v3/KEY")
    assert refused.value.data["name"] == "HTTPS_PROXY"
    said = str(refused.value) + repr(refused.value.data)
    assert "PROXYPASS" not in said and "proxyuser" not in said


def _tls_for(name: str, where: Path) -> ssl.SSLContext:
    """A server context with a new self-signed certificate for `name` (cert.pem in `where`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (where / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (where / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(where / "cert.pem", where / "key.pem")
    return context


def test_the_embedded_chains_own_calls_ignore_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting anvil asks it for its chain ID over urllib, which would follow HTTP_PROXY even
    to this host (urllib bypasses only NO_PROXY)."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    with scripted_node(_chain_id) as node:
        assert rpc_call(node.url, "eth_chainId", timeout=5) == "0x7a69"
