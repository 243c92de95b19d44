"""NodeService: builds the node's subsystems from its config, starts them in order, stops them
in reverse.

Start-up is asynchronous (connecting to the chain takes a round trip or a deployment), so each
step is awaited before the next begins; a step that fails stops the node with one clear line in
the log instead of leaving a half-started daemon behind.
"""

from __future__ import annotations

import atexit
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from perund.api.amounts import Currencies
from perund.api.credentials import CredentialRegistry
from perund.chain.backend import ChainBackend
from perund.chain.chain_view import SharedChainView
from perund.chain.devchain import DEFAULT_DEV_CHAIN_ID
from perund.chain.embedded import EmbeddedChain
from perund.chain.urls import shown_url
from perund.challenge_watch import ChallengeWatch
from perund.channel.records import Channel
from perund.channel.types import hex_address
from perund.config import DATA_DIR_LOCK, NodeConfig
from perund.disk_guard import DiskGuard
from perund.errors import (
    ChainMismatch,
    FailedPrecondition,
    InvalidConfig,
    InvalidContracts,
    PerundError,
    ResourceExists,
    ResourceNotFound,
)
from perund.locks import LockHeld, hold
from perund.metrics import Metrics
from perund.node_assets import add_test_token, check_tokens, configured_currencies
from perund.node_devchain import DEVCHAIN_FOLDER, ExitWatch, start_embedded_chain
from perund.node_metrics import NodeMetrics
from perund.node_state import (
    SESSIONS_FILE,
    RememberedSession,
    SessionsWriter,
    new_session_id,
    read_sessions,
)
from perund.reopening import Reopener
from perund.safe_files import FileRules, os_reason
from perund.session.chain_check import FUNDED
from perund.session.config import SessionConfig, read_session_files
from perund.session.session import Session, SessionParts
from perund.session_claims import node_ports, refuse_claimed_port, refuse_second_open
from perund.storage.fsync_thread import fsync_thread
from perund.storage.store import SessionStore
from perund.words import plural


class NodeService(MultiService):
    """The whole node: the chain backend now; sessions and the API join it as they are built."""

    log = Logger()
    name = "perund"

    def __init__(self, reactor: Any, config: NodeConfig) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted leaves it untyped
        self._reactor = reactor
        self.config = config
        self.devchain: EmbeddedChain | None = None
        """The embedded dev chain (anvil, state in data_dir/devchain), without chain.url."""
        if not config.chain.url:
            self.devchain = EmbeddedChain(reactor, config.data_dir / DEVCHAIN_FOLDER,
                                          chain_id=config.chain.id or DEFAULT_DEV_CHAIN_ID)
        self.chain = ChainBackend(
            reactor,
            # The embedded chain's URL is known once it runs (ChainBackend.use_url).
            url=config.chain.url or EMBEDDED_PENDING_URL,
            chain_id=config.chain.id or (DEFAULT_DEV_CHAIN_ID if self.devchain else None),
            adjudicator=config.chain.adjudicator,
            connect_timeout=config.timeouts.chain_connect,
            tx_timeout=config.timeouts.tx,
        )
        self.chain.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.chain_view = SharedChainView(reactor, self.chain,
                                          max_age=config.chain.poll_interval / 2)
        """What every session's watcher reads the chain through (their polls share requests)."""
        self.ready: Deferred[None] = Deferred()
        """Fires once every start-up step has completed (fails if one did not)."""
        self.sessions: dict[str, Session] = {}
        self.metrics = Metrics()
        """The node's counters (`GET /metrics` shows them with `exposition`'s gauges)."""
        self.currencies: Currencies = configured_currencies(config)
        """The currencies the node knows: ETH, the tokens of `chain.assets` and, on the
        embedded chain, its test token PRN (added once the chain runs)."""
        self.started = False
        """Whether start-up completed: the chain is connected and sessions may open."""
        self._opening: dict[str, list[Deferred[None]]] = {}
        """Session files being opened, and who waits for that to end."""
        self._remembered: dict[str, RememberedSession] = {}
        """Sessions users opened and did not close, by resolved config path: open ones and
        those that could not be opened again at start (kept, to be tried at the next)."""
        self._reopener = Reopener(reactor, self._open_session)
        """Sessions whose reopening at start met a passing chain error, tried again."""
        self.disk_guard = DiskGuard(reactor, config.limits.min_free_disk)
        """Free space on the sessions' store disks (`limits.min_free_disk`)."""
        self.challenge_watch = ChallengeWatch(reactor, config, self.chain.call_times,
                                              self.sessions)
        """Whether the chain answers fast enough for the open channels' challenge durations."""
        self.exposition = NodeMetrics(self.metrics, self.sessions, self._reopener,
                                      self.disk_guard, self.chain_view, self.currencies,
                                      self.challenge_watch, self.chain.call_times)
        """What the node counts from its sessions and shows on `GET /metrics`."""
        self.credentials: CredentialRegistry | None = None
        """The API's credentials (the operator's token and the sessions'), once listening."""
        self._sessions_writer = SessionsWriter(self.sessions_file, fsync_thread(reactor))
        """Writes `sessions_file` off the reactor, changes grouped (perund.node_state)."""
        self._prepared: dict[str, Deferred[SessionParts]] = {}
        """The remembered sessions' files, keys and stores, made ready while the chain starts
        (by resolved config path), until their sessions are built."""
        self._devchain_watch: ExitWatch | None = None
        """Whether the embedded chain's process is still alive, once it runs."""
        self._discarding: Deferred[None] | None = None
        """After a failed start: the release of what was prepared (a stop waits for it)."""

    def startService(self) -> None:
        """Start the child services, then run the asynchronous start-up steps in order."""
        raise_open_file_limit()
        super().startService()  # type: ignore[no-untyped-call]
        started = Deferred.fromCoroutine(self._start())
        started.addCallbacks(self._started, self._start_failed)

    def _started(self, _: object) -> None:
        self.started = True
        self.ready.callback(None)

    async def _start(self) -> None:
        self._hold_data_dir()
        self._open_log_file()
        self._warn_of_missing_config_dirs()
        self._remembered = {s.config: s for s in read_sessions(self.sessions_file)}
        # Reading the sessions' files and stores and unlocking their keys needs no chain: it
        # runs while the chain starts (anvil loads its state in its own process meanwhile).
        self._prepare_remembered()
        try:
            if self.devchain is not None:
                chain_id = await start_embedded_chain(self.devchain, self.chain, self.config)
                add_test_token(self.currencies, self.devchain)
                self._devchain_watch = ExitWatch(self._reactor, self.devchain)
            else:
                chain_id = await self.chain.connect()
        except InvalidContracts as exc:
            # No Adjudicator (or another contract) where channels were funded: say which
            # channels are at stake, not only that the contract is missing.
            at_stake = await self._channels_at_stake()
            if not at_stake:
                raise
            channels = plural(len(at_stake), "channel of the node's sessions is",
                              "channels of the node's sessions are")
            they = "it was" if len(at_stake) == 1 else "they were"
            raise ChainMismatch(
                f"{exc.message}, while {channels} funded there ({'; '.join(at_stake[:10])}): "
                f"point chain.url and chain.adjudicator at the chain and contract {they} "
                "funded on "
                "(docs/operations.md, \"When things go wrong\")",
                channels=at_stake) from None
        # The chain check of the sessions' channels is read-only: the chain answers it while
        # the tokens are checked and the API starts.
        for parts in self._prepared.values():
            parts.addCallback(lambda prepared: Deferred.fromCoroutine(
                Session.check_chain(prepared, self.chain, self.currencies.label)))
        await check_tokens(self.chain, self.currencies)
        await self._listen_api()
        # Users may open sessions from here on, while the node opens its own again.
        self.started = True
        await self._reopen_sessions()
        self.challenge_watch.start()
        # Only now: a session whose chain check fails still stops the start.
        adjudicator = self.chain.adjudicator
        self.log.info(
            "node ready on chain {chain_id} ({where}), Adjudicator {adjudicator}",
            chain_id=chain_id,
            where=shown_url(self.config.chain.url) or "embedded dev chain",
            adjudicator=hex_address(adjudicator) if adjudicator else "-",
        )

    def _hold_data_dir(self) -> None:
        """Lock data_dir for this process before anything in it is read or started: a second
        node on the same folder would run a second embedded chain on its state and overwrite
        the first one's deposits (and unlock every remembered session's keys for nothing)."""
        folder = self.config.data_dir
        if folder.exists() and not folder.is_dir():
            raise InvalidConfig(f"data_dir {folder} is not a folder", name="data_dir",
                                value=str(folder))
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._data_dir_lock: int | None = hold(folder / DATA_DIR_LOCK)
        except LockHeld as held:
            raise InvalidConfig(
                f"data_dir {folder} is in use by another perund (pid {held.holder}); one node "
                "per data folder", name="data_dir", value=str(folder)) from None
        except OSError as exc:
            raise InvalidConfig(f"data_dir {folder}: cannot use it: {os_reason(exc)}",
                                name="data_dir", value=str(folder)) from None

    def _warn_of_missing_config_dirs(self) -> None:
        """A folder of `sessions.config_dirs` that is not there is most likely a typo: say so
        now, not only when a session file from it is refused as outside every folder."""
        for folder in self.config.sessions.config_dirs:
            if not folder.is_dir():
                self.log.warn("sessions.config_dirs: {folder} is not a folder: no session file "
                              "can come from it (a typo?)", folder=str(folder))

    def _open_log_file(self) -> None:
        """Start writing `log.file`, if one is configured (InvalidConfig if it cannot be)."""
        if not self.config.log.file:
            return
        from perund.logs import LogFile

        log_file = LogFile(self.config.log)
        try:
            log_file.start()
        except OSError as exc:
            raise InvalidConfig(f"log.file {log_file.path}: cannot write it: {os_reason(exc)}",
                                name="log.file", value=str(log_file.path)) from None
        self._log_file = log_file

    async def _listen_api(self) -> None:
        """Serve JSON-RPC on /rpc and WebSocket on /ws at `api.listen`, behind the token."""
        from twisted.internet.endpoints import serverFromString

        from perund.api.http import ensure_token
        from perund.api.site import make_site
        from perund.node_api import NodeAPI

        self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        token = ensure_token(self.config.token_path)
        self.credentials = CredentialRegistry(
            token, clock=self._reactor.seconds,
            stored=[c for s in self._remembered.values() for c in s.credentials],
            on_change=self._remember_sessions, saved=self._sessions_writer.durable,
            changes_per_second=self.config.limits.api_credential_changes)
        self.site = make_site(
            NodeAPI(self), self.credentials, reactor=self._reactor, metrics=self.metrics,
            render_metrics=self.exposition.render,
            allowed_origins=self.config.api.allowed_origins, limits=self.config.limits.api(),
            currencies=self.currencies)
        try:
            endpoint = serverFromString(self._reactor, self.config.api.listen)  # type: ignore[no-untyped-call]
            self._api_port = await endpoint.listen(self.site)
        except Exception as exc:  # CannotListenError and friends: one clear line
            raise InvalidConfig(
                f"cannot listen for the API on {self.config.api.listen}: {exc}",
                name="api.listen", value=self.config.api.listen,
            ) from None
        self.log.info("API on {listen} (POST /rpc, GET /ws); token in {token_file}",
                      listen=self.config.api.listen, token_file=str(self.config.token_path))

    @property
    def api_port(self) -> int | None:
        """The API's bound TCP port, once listening."""
        port = getattr(getattr(self, "_api_port", None), "getHost", None)
        return getattr(port(), "port", None) if port is not None else None

    def _start_failed(self, failure: Failure) -> None:
        self._discarding = Deferred.fromCoroutine(self._discard_prepared())
        if isinstance(failure.value, PerundError):
            self.log.critical("start-up failed: {message}", message=failure.value.message)
        else:
            self.log.failure("start-up failed", failure)
        self.ready.errback(failure)
        self.ready.addErrback(lambda _: None)
        # twistd exits 0 after any stop; a service manager must see the failure. The status is
        # set when the interpreter exits, after twistd has removed its pid file (which would
        # otherwise be left behind and could block the next start). A step that failed before
        # the reactor ran (a data_dir that is a file) stops it as soon as it runs.
        if self._reactor.running:
            self._stop_failed()
        else:
            self._reactor.callWhenRunning(self._stop_failed)

    def _stop_failed(self) -> None:
        atexit.register(_exit_failed)
        self._reactor.stop()

    def stopService(self) -> Deferred[None]:
        """Stop the child services in reverse order of start, each awaited."""
        return Deferred.fromCoroutine(self._stop())

    # -- sessions -------------------------------------------------------------------------------

    async def open_session(self, config_file: str) -> Session:
        """Open the session of `config_file` (see `Session.open`); ResourceExists (with its
        ID) if it is open already or being opened."""
        if not self.started:
            raise FailedPrecondition("the node is still starting: try again in a moment")
        return await self._open_session(config_file)

    async def _open_session(self, config_file: str) -> Session:
        if "\x00" in config_file:
            raise InvalidConfig("configFile: a path has no NUL character", name="configFile",
                                requirement="a file path")
        if not Path(config_file).is_absolute() and self.config.path is not None:
            # Relative to the node config's folder, as every path in that file is: the node's
            # working directory is no one's choice (systemd starts it in /).
            config_file = str(self.config.path.resolve().parent / config_file)
        resolved = str(Path(config_file).resolve())
        opening = self._opening.get(resolved)
        if opening is not None:
            # Two opens of one session at once (a user's and the reopening at start-up, say):
            # the second waits for the first and is told the session is open.
            waiter: Deferred[None] = Deferred()
            opening.append(waiter)
            await waiter
        for session in self.sessions.values():
            if str(session.config.path.resolve()) == resolved:
                raise ResourceExists("this session is open already", type="session",
                                     id="0x" + session.id, configFile=str(session.config.path))
        self._opening[resolved] = []
        parts = self._prepared.pop(resolved, None)
        remembered = self._remembered.get(resolved)
        session_id = remembered.session_id if remembered is not None else new_session_id()
        try:
            session = await Session.open(self._reactor, config_file, chain=self.chain,
                                         node=self.config, session_id=session_id,
                                         chain_view=self.chain_view, rules=self.file_rules,
                                         check=partial(self._not_open_already,
                                                       resolved=resolved),
                                         asset_label=self.currencies.label,
                                         currencies=self.currencies, parts=parts)
        except BaseException:
            for waiter in self._opening.pop(resolved):
                waiter.callback(None)
            raise
        waiting = self._opening.pop(resolved)
        self.sessions[session.id] = session
        self._guard_disk(session)
        # Its port is its own from now on, also while it is not open (perund/session_claims).
        self._remembered.setdefault(resolved, RememberedSession(resolved, session.id)).listen \
            = session.config.comm_listen
        session.client.observers.append(self.exposition.count)
        session.store.payment_listeners.append(self.exposition.count_payments)
        site = getattr(self, "site", None)
        if site is not None:
            # The API's hub listens from now on, and gets what the session told before (its
            # first poll may have refuted a registration): nothing is lost for the pushes.
            site.hubs.attach(bytes.fromhex(session.id))
        self._remember_sessions()
        for waiter in waiting:
            waiter.callback(None)
        await self._sessions_writer.settled()  # its credential must survive a restart
        return session

    def _not_open_already(self, config: SessionConfig, resolved: str) -> None:
        """Refuse the session of `config` (its file `resolved`) if its user has one open here
        already, or its peer port is the node's or another session's (perund/session_claims)."""
        refuse_second_open(config, self.sessions.values())
        refuse_claimed_port(config, resolved, self._remembered, node_ports(
            api_port=self.api_port, api_listen=self.config.api.listen,
            chain_url=self.chain.url))

    @property
    def file_rules(self) -> FileRules:
        """Where the files of sessions may come from: the folders of `sessions.config_dirs`,
        never the node's own data folder or token file (docs/security.md)."""
        return FileRules.within(self.config.sessions.config_dirs,
                                forbidden=(self.config.data_dir, self.config.token_path))

    async def _channels_at_stake(self) -> list[str]:
        """The funded, unsettled channels of the sessions the node would open again, read
        from their stores (no keys needed), for a message when the chain lacks them."""
        await self._discard_prepared()  # their stores are read here without keys
        found = []
        for path in sorted(self._remembered or {s.config: s for s in
                                                read_sessions(self.sessions_file)}):
            try:
                config, _ = await deferToThread(read_session_files, path, self.file_rules)
                store = SessionStore(config.database, self._reactor)
            except (PerundError, OSError):
                continue  # its own problem is reported when it is opened
            try:
                for channel in store.channels():
                    if channel.phase in FUNDED:
                        totals = ", ".join(
                            " ".join(reversed(self.currencies.render(asset, sum(row))))
                            for asset, row in zip(channel.latest.assets,
                                                  channel.latest.balances, strict=True))
                        found.append(f"channel 0x{channel.channel_id.hex()[:8]}… of {path}: "
                                     f"{totals}")
            finally:
                store.close()
        return found

    # -- sessions across restarts ---------------------------------------------------------------

    def _prepare_remembered(self) -> None:
        """Start preparing every remembered session (`Session.prepare`)."""
        for path in sorted(self._remembered):
            self._prepared[path] = Deferred.fromCoroutine(Session.prepare(
                self._reactor, path, node=self.config, rules=self.file_rules,
                check=partial(self._not_open_already, resolved=path),
                currencies=self.currencies))

    async def _discard_prepared(self) -> None:
        """Close what was prepared for sessions that will not be built now (the start failed
        or the node stops first). A preparation that failed says why when the session is
        opened again, at the next start."""
        prepared, self._prepared = self._prepared, {}
        for parts in prepared.values():
            try:
                (await parts).store.close()
            except PerundError:
                continue  # said when the session is opened again
            except Exception:
                self.log.failure("preparing a remembered session failed")

    @property
    def sessions_file(self) -> Path:
        """Where the node keeps the config files of its open sessions (node state, not config:
        the node writes it), to open them again when it starts."""
        return self.config.data_dir / SESSIONS_FILE

    def _remember_sessions(self) -> None:
        """Save the sessions to open again at the next start, with their credentials (written
        on the fsync thread: `_sessions_writer.durable()` says when it is on disk)."""
        credentials = self.credentials
        for remembered in self._remembered.values():
            remembered.credentials = [] if credentials is None \
                else credentials.stored(remembered.session_id)
        self._sessions_writer.save(list(self._remembered.values()))

    async def _reopen_sessions(self) -> None:
        """Open again every session that was open when the node stopped or died: their
        channels are watched again at once (docs/specification.md §5), without waiting for a
        user. They
        open side by side (each mostly waits on its keys and the chain), and the node is ready
        when all are."""
        paths = sorted(self._remembered)
        outcomes = await DeferredList(
            [Deferred.fromCoroutine(self._open_session(path)) for path in paths],
            consumeErrors=True)
        mismatched: list[ChainMismatch] = []
        for path, (_, result) in zip(paths, outcomes, strict=True):
            if isinstance(result, Session):
                self.log.info("session {path} open again as {session_id} ({channels} "
                              "restored)", path=path, session_id=result.id,
                              count=len(result.restored),
                              channels=plural(len(result.restored), "channel"))
            elif result.check(ResourceExists):
                continue
            elif result.check(ChainMismatch):
                # Money is at stake: the node does not start on a chain that lost it, unless
                # the operator says so (--accept-lost-channels).
                mismatched.append(result.value)
            elif not self._reopener.retry(path, result.value):
                # The session stays on the list: the next start tries again.
                self.log.error("could not open session {path} again: {error}; its channels "
                               "are not watched until it is opened", path=path,
                               error=result.value)
        if not mismatched:
            return
        # Every session at stake, not only the first: the operator fixes them in one go.
        # The data as each session's has it: the sessions, and all their channels.
        message = " Also: ".join(m.message for m in mismatched)
        devchain = self.devchain
        if devchain is not None and devchain.set_aside is not None:
            # --fresh-chain by mistake: the old chain is whole beside the new one (an audit
            # had to find the folder and swap them by hand).
            aside, folder = devchain.set_aside, devchain.folder
            message += (f" This start set the embedded chain those channels were funded on "
                        f"aside in {aside} (--fresh-chain): to go back to it, run "
                        f"`mv {folder} {folder}.new && mv {aside} {folder}` and start without "
                        "--fresh-chain.")
        data = dict(mismatched[0].data) if len(mismatched) == 1 else {
            "sessions": [m.data.get("session") for m in mismatched],
            "channels": [channel for m in mismatched for channel in m.data.get("channels", [])]}
        raise ChainMismatch(message, **data)

    def session(self, session_id: str) -> Session:
        """The open session `session_id`; ResourceNotFound otherwise."""
        session = self.sessions.get(session_id)
        if session is None:
            raise ResourceNotFound("no such session", type="session", id=session_id)
        return session

    async def close_session(self, session_id: str, force: bool) -> list[Channel]:
        """Close a session at its user's request; the channels it leaves open (see
        `Session.close`). It is not opened again when the node restarts, and its credentials
        end."""
        session = self.session(session_id)
        left = await self._close_session(session_id, force, node_stops=False)
        self._remembered.pop(str(session.config.path.resolve()), None)
        if self.credentials is not None:
            self.credentials.revoke_session(session_id)
        self._remember_sessions()  # on disk before the call is answered: session_close
        return left

    async def _close_session(self, session_id: str, force: bool, node_stops: bool) -> list[Channel]:
        session = self.session(session_id)
        left = await session.close(force, node_stopping=node_stops)
        del self.sessions[session_id]
        self.exposition.closed(session)
        self.disk_guard.unwatch(session_id)
        return left

    def _guard_disk(self, session: Session) -> None:
        """Refuse the session's payments while its store's disk is nearly full."""
        session_id = session.id
        self.disk_guard.watch(session_id, session.config.database)
        session.client.refusals.append(
            lambda _, winding_down: self.disk_guard.refusal(session_id, winding_down))

    async def _stop(self) -> None:
        # Sessions first (their channels stay persisted), then the services they use.
        self._reopener.stop()
        self.disk_guard.stop()
        self.challenge_watch.stop()
        if self._devchain_watch is not None:
            self._devchain_watch.stop()
        await self._discard_prepared()
        if self._discarding is not None:
            await self._discarding
        for session_id in list(self.sessions):
            try:
                # Not `close_session`: the node stops, the sessions are to open again.
                await self._close_session(session_id, force=True, node_stops=True)
            except Exception:
                self.log.failure("closing session {session_id} failed", session_id=session_id)
        api_port = getattr(self, "_api_port", None)
        if api_port is not None:
            await api_port.stopListening()
        for service in reversed(list(self)):
            result = service.stopService()
            if isinstance(result, Deferred):
                await result
        await self._sessions_writer.settled()  # the last changes of the sessions file
        if self.devchain is not None:
            await self.devchain.stop()  # it dumps its state
        log_file = getattr(self, "_log_file", None)
        if log_file is not None:
            log_file.stop()
        lock = getattr(self, "_data_dir_lock", None)
        if lock is not None:
            os.close(lock)  # the flock goes with the descriptor
            self._data_dir_lock = None
        # Service's, not MultiService's: that one would stop the children a second time.
        Service.stopService(self)  # type: ignore[no-untyped-call]

    @property
    def clock(self) -> IReactorTime:
        """The reactor's clock, which expiries are measured on."""
        clock: IReactorTime = self._reactor
        return clock



EMBEDDED_PENDING_URL = "http://127.0.0.1:0"
"""The embedded chain's URL until it runs (it picks its port)."""


def raise_open_file_limit() -> int | None:
    """Raise the soft limit of open files to the hard limit (connections, stores and the chain
    all take descriptors, and 1024 is a common soft default); the new limit, None where
    there is no such limit."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        NodeService.log.warn("could not raise the open-file limit from {soft} to {target}: "
                             "{error}", soft=soft, target=target, error=exc)
        return soft
    NodeService.log.info("open-file limit raised from {soft} to {target}", soft=soft,
                         target=target)
    return target


def _exit_failed() -> None:
    """End the process with status 1 at interpreter exit (the logs are out, twistd's clean-up
    is done)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
