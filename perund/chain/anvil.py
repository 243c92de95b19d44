"""Start and stop a local anvil dev chain (for tests, benchmarks and the demo node).

anvil comes from the repository's npm packages (`make deps`): the platform package
`@foundry-rs/anvil-<os>-<arch>/bin/anvil`, or the `node_modules/.bin/anvil` wrapper. The chain
listens on 127.0.0.1 on a port the OS picked, uses the well-known development mnemonic, and is
ready when it answers `eth_chainId`. Plain subprocess and blocking HTTP (the chain client's
transport): callers in the reactor run this from a thread or before the reactor starts.
"""

from __future__ import annotations

import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from perund.chain.jsonrpc import HttpTransport
from perund.errors import ChainNotReachable, ProtocolError

DEFAULT_CHAIN_ID = 31337
DEV_MNEMONIC = "test test test test test test test test test test test junk"
"""anvil's (and hardhat's) default mnemonic: the dev accounts are the same on every run."""

_OS_NAMES = {"linux": "linux", "darwin": "darwin", "win32": "win32"}
_ARCH_NAMES = {"x86_64": "amd64", "amd64": "amd64", "arm64": "arm64", "aarch64": "arm64"}
_START_ATTEMPTS = 3  # another process may grab the free port between our probe and anvil's bind


def _search_roots() -> list[Path]:
    """Where node_modules may live: the source checkout holding this file, then the cwd upwards."""
    here = Path(__file__).resolve().parents[2]
    roots = [here, *Path.cwd().resolve().parents]
    roots.insert(1, Path.cwd().resolve())
    seen: list[Path] = []
    for root in roots:
        if root not in seen:
            seen.append(root)
    return seen


def find_anvil(roots: Sequence[Path] | None = None) -> str:
    """The path of the anvil binary from node_modules; ChainNotReachable when it is not there."""
    os_name = _OS_NAMES.get(sys.platform)
    arch = _ARCH_NAMES.get(platform.machine().lower())
    exe = "anvil.exe" if sys.platform == "win32" else "anvil"
    candidates: list[Path] = []
    for root in roots if roots is not None else _search_roots():
        modules = root / "node_modules"
        if os_name and arch:
            candidates.append(modules / "@foundry-rs" / f"anvil-{os_name}-{arch}" / "bin" / exe)
        candidates.append(modules / ".bin" / exe)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ChainNotReachable(
        "the anvil binary was not found in node_modules: run `make deps`",
        searched=[str(c) for c in candidates],
    )


_CLAIM_LIFETIME: Final = 300.0
"""Seconds a port handed out stays reserved for its server: long enough to start a daemon."""


def _unassigned_ports() -> range:
    """Ports the OS does not hand out to outgoing connections (outside its ephemeral range), so
    a port from here is not taken between our check and its use, as an OS-picked one can be."""
    low, high = 32768, 60999  # Linux's default
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        low, high = int(text[0]), int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    if low >= 11024:
        return range(max(10000, low - 12768), low)
    if high <= 55000:
        return range(high + 1, 65536)
    return range(20000, 32768)  # no room outside: the check-then-bind is all we have


_handed_out: set[int] = set()


def _claims_dir() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"perund-ports-{uid}"


def _claim(port: int) -> bool:
    """Reserve `port` across the processes of this user (parallel test workers, say): nobody
    else is handed it until `_CLAIM_LIFETIME` has passed, even before its server binds."""
    if port in _handed_out:
        return False
    claims = _claims_dir()
    try:
        claims.mkdir(exist_ok=True)
        os.close(os.open(claims / str(port), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        try:
            if time.time() - (claims / str(port)).stat().st_mtime <= _CLAIM_LIFETIME:
                return False
            os.utime(claims / str(port))  # a stale claim: ours now
        except OSError:
            return False
    except OSError:
        pass  # no shared claims here: this process's own record still holds
    _handed_out.add(port)
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now and not handed out recently by this function in any
    process of this user, for a server to be started soon after."""
    candidates = _unassigned_ports()
    for _ in range(200):
        port = random.choice(candidates)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        if _claim(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def rpc_call(url: str, method: str, params: Sequence[Any] = (), timeout: float = 5.0) -> Any:
    """One JSON-RPC call (the chain client's transport, which never proxies this host); the
    `result`, or ChainNotReachable on any failure."""
    transport = HttpTransport(url, timeout=timeout)
    try:
        return transport.request(method, params)
    except (OSError, ProtocolError) as exc:  # ChainRpcError is a ProtocolError
        raise ChainNotReachable(f"{method} to {url} failed: {exc}", url=url) from exc
    finally:
        transport.close()


class Anvil:
    """A running anvil process on 127.0.0.1, with its URL, chain ID and funded dev keys.

    Use as a context manager, or call `start()` and `stop()`. `private_keys[i]` (32 raw bytes)
    controls `accounts[i]`; each holds 10,000 ETH at genesis.
    """

    def __init__(
        self,
        chain_id: int = DEFAULT_CHAIN_ID,
        *,
        accounts: int = 10,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        self.chain_id = chain_id
        self.n_accounts = accounts
        self.binary = binary
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.private_keys: tuple[bytes, ...] = ()
        self.accounts: tuple[bytes, ...] = ()
        self._process: subprocess.Popen[bytes] | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._log: Path | None = None

    @property
    def url(self) -> str:
        """The HTTP JSON-RPC endpoint."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The WebSocket JSON-RPC endpoint (anvil serves both on one port)."""
        return f"ws://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Anvil:
        """Start anvil and wait until it answers; ChainNotReachable if it does not come up."""
        if self._process is not None:
            raise RuntimeError("anvil is already started")
        binary = self.binary or find_anvil()
        self._tmpdir = tempfile.TemporaryDirectory(prefix="perund-anvil-")
        config_out = Path(self._tmpdir.name) / "anvil.json"
        last_error: ChainNotReachable | None = None
        for _ in range(_START_ATTEMPTS):
            self.port = free_port(self.host)
            config_out.unlink(missing_ok=True)  # a failed attempt's must not vouch for this one
            try:
                self._spawn(binary, config_out)
                self._wait_ready()
                self._check_answered_by_ours(config_out)
            except ChainNotReachable as exc:
                last_error = exc
                self._terminate()
                continue
            self._load_keys(config_out)
            return self
        self._cleanup_tmp()
        assert last_error is not None
        raise last_error

    def _spawn(self, binary: str, config_out: Path) -> None:
        args = [
            binary,
            "--host", self.host,
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--accounts", str(self.n_accounts),
            "--mnemonic", DEV_MNEMONIC,
            "--config-out", str(config_out),
            "--silent",
            *self.extra_args,
        ]  # fmt: skip
        # stderr goes to a file, not a pipe: nobody drains a pipe while anvil runs, and a full
        # pipe would block it.
        with open(config_out.with_suffix(".log"), "wb") as log:
            try:
                self._process = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
                )
            except OSError as exc:
                raise ChainNotReachable(f"cannot run {binary}: {exc}: run `make deps`") from exc
        self._log = config_out.with_suffix(".log")

    def _wait_ready(self) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = process.poll()
            if code is not None:
                stderr = self._log.read_text(errors="replace") if self._log else ""
                raise ChainNotReachable(
                    f"anvil exited with code {code} during startup: {stderr.strip()[-500:]}",
                    url=self.url,
                )
            try:
                answer = rpc_call(self.url, "eth_chainId", timeout=1.0)
            except ChainNotReachable:
                if time.monotonic() > deadline:
                    raise ChainNotReachable(
                        f"anvil did not answer on {self.url} within {self.startup_timeout} s",
                        url=self.url,
                    ) from None
                time.sleep(0.05)
                continue
            if int(answer, 16) != self.chain_id:
                raise ChainNotReachable(
                    f"anvil on {self.url} reports chain {int(answer, 16)}, not {self.chain_id}",
                    url=self.url,
                )
            return

    def _check_answered_by_ours(self, config_out: Path) -> None:
        # Another process's anvil may hold the port we picked (other users of the machine run
        # theirs): it answers eth_chainId while ours fails to bind and exits without writing its
        # config. Ours writes the config before it accepts connections.
        process = self._process
        if process is None or process.poll() is not None or not config_out.exists():
            raise ChainNotReachable(
                f"another server answered on {self.url}: port taken", url=self.url
            )

    def _load_keys(self, config_out: Path) -> None:
        # --config-out is written before the RPC server accepts connections, so it is complete here.
        config = json.loads(config_out.read_text())
        self.private_keys = tuple(bytes.fromhex(k[2:]) for k in config["private_keys"])
        self.accounts = tuple(bytes.fromhex(a[2:]) for a in config["available_accounts"])

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate anvil (SIGTERM, then SIGKILL after `timeout`) and remove its temp files."""
        self._terminate(timeout)
        self._cleanup_tmp()

    def _terminate(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _cleanup_tmp(self) -> None:
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"Anvil({self.url}, chain_id={self.chain_id}, {state})"


def anvil_available() -> bool:
    """Whether an anvil binary can be found in node_modules."""
    try:
        find_anvil()
    except ChainNotReachable:
        return False
    return True
