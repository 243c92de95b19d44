"""The commands of perund-cli, shared by the one-shot mode and the shell.

A command gets a `Context` (the API client, the session, the style) and its parsed arguments,
and returns an `Outcome` (done: a JSON value and a text) or a `Long` (a call that waits for the
peer or the chain; the caller runs it with progress and turns its result into an Outcome).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perund.cli.apiclient import ApiClient, ApiError
from perund.cli.client import render
from perund.cli.client.credentials import (
    check_token_file_target,
    credential_note,
    is_session_credential,
    write_token_file,
)
from perund.cli.client.durations import duration, duration_refusal
from perund.cli.client.errors import CliError, NotFound, UsageError
from perund.cli.client.render import Style, balances_pair, short_id
from perund.words import plural

STATUS_TIMEOUT = 5.0
"""Seconds a progress query (channel_get, channel_list) may take before it is skipped."""

HEX_ID = re.compile(r"^(0x)?[0-9a-fA-F]*$")
DEFAULT_RETIRED_LIMIT = 100
"""Retired channels `channel list --retired` shows without --limit."""


@dataclass
class Outcome:
    """What a finished command shows: `value` for --json, `text` for a person."""

    value: Any
    text: str
    session: str | None = None
    """A session the command opened or found open: the shell switches to it."""
    session_label: str | None = None
    credential: str | None = None
    """A session credential the command received for the session it uses: the shell acts
    with it from now on."""
    credential_file: str | None = None
    """The file holding `credential`, if it was written to one: a later rotation of that
    credential writes its successor back there."""
    notes: list[str] = field(default_factory=list)
    """Remarks for stderr in one-shot mode (the shell prints them as lines)."""


@dataclass
class Long:
    """A command that waits for the peer or the chain: run `call` with progress, then show
    `finish(result)`."""

    title: str
    call: Callable[[], Any]
    status: Callable[[], str]
    finish: Callable[[Any], Outcome]


Result = Outcome | Long


class Context:
    """What commands use: the node, the current session, and the style of the output."""

    def __init__(self, api: ApiClient, style: Style, node_label: str,
                 session: str | None, token_file: str | None = None) -> None:
        self.api = api
        self.token_file = token_file
        """The file the credential in use was read from (None: not from a file): rotating
        that credential writes its successor back there."""
        self.opener = api
        """The credential the CLI started with: it opens sessions (the operator's token),
        while `api` may be a session's own credential by then."""
        self.style = style
        self.node_label = node_label
        self.session = session
        self._clock_offset: float | None = None
        self.pending_resolver: Callable[[str, str], str] | None = None
        """The shell resolves proposal and update ID prefixes from the pushes it saw."""
        self.symbols: list[str] | None = None
        """The node's currency symbols (`node_getConfig`), once asked."""
        self.confirm: Callable[[str], bool] | None = None
        """Asks the user a question (on a terminal) and says whether the answer was yes;
        None where no one can be asked (no terminal, the shell): a command that needs a yes
        then needs `--yes`."""

    def currency(self, typed: str) -> str:
        """The node's symbol that `typed` names, in any letter case (`prn` is PRN); what
        was typed when the node has no such currency (the node then says which it has)."""
        if typed == "ETH":
            return typed
        if self.symbols is None:
            self.symbols = list(self.call("node_getConfig").get("assets", {}))
        matches = [s for s in self.symbols if s.upper() == typed.upper()]
        return matches[0] if matches else typed

    def session_id(self) -> str:
        """The current session; with a session's own credential and no --session, that
        credential's session (the node lists only it). UsageError if there is none."""
        if self.session is None and is_session_credential(self.api.token):
            own = self.call("session_list")
            if len(own) == 1:
                self.session = str(own[0]["sessionId"])
                return self.session
            raise UsageError("the session of this credential is not open on the node: "
                             "its operator opens it (`session open CONFIG`)")
        if self.session is None:
            raise UsageError("no session: give --session ID (or set PERUND_SESSION); "
                             "`session open CONFIG` prints the ID")
        return self.session

    def call(self, method: str, **params: Any) -> Any:
        """A quick call: the node's result, ApiError otherwise."""
        return self.api.result(method, params)

    def call_long(self, method: str, **params: Any) -> Any:
        """A call that waits for the peer or the chain: no client-side time limit (the node
        has its own timeouts; ^C stops waiting)."""
        return self.api.result(method, params, timeout=None)

    def quick(self, method: str, **params: Any) -> Any:
        """A call for progress display, bounded by STATUS_TIMEOUT."""
        return self.api.result(method, params, timeout=STATUS_TIMEOUT)

    def node_now(self) -> float:
        """The node's clock now (expiries and challenge timeouts are on it)."""
        if self._clock_offset is None:
            before = time.time()
            node = float(self.call("node_time"))
            self._clock_offset = node - (before + time.time()) / 2
        return time.time() + self._clock_offset

    def channels(self) -> list[dict[str, Any]]:
        """The session's channels."""
        result: list[dict[str, Any]] = self.call("channel_list", sessionId=self.session_id())
        return result

    def resolve_channel(self, ref: str) -> dict[str, Any]:
        """The channel `ref` names: a full ID (asked of the node), an ID prefix, or the alias
        of a peer with exactly one channel that is not closed."""
        session = self.session_id()
        text = ref.strip()
        hex_part = text[2:] if text[:2].lower() == "0x" else text
        if HEX_ID.match(text) and len(hex_part) == 64:
            found: dict[str, Any] = self.call("channel_get", sessionId=session,
                                              channelId="0x" + hex_part.lower())
            return found
        channels = self.channels()
        by_peer = [c for c in channels if c["peer"].lower() == text.lower() or
                   c.get("peerAddress", "").lower() == text.lower()]
        if HEX_ID.match(text) and hex_part:
            matches = [c for c in channels
                       if c["channelId"][2:].lower().startswith(hex_part.lower())]
            if matches and text[:2].lower() != "0x" and (by_peer or self._is_alias(text)):
                # An alias made of hex letters (`ed`, `cafe`, `f`): paying the channel whose ID
                # happens to start so would pay another peer.
                raise UsageError(f"{text} is both a peer's alias and the start of a channel ID: "
                                 f"write 0x{hex_part} for the channel, or give its full ID")
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise UsageError(f"channel prefix {text} is ambiguous: " + ", ".join(
                    short_id(c["channelId"]) for c in matches[:5]))
        live = [c for c in by_peer if c["phase"] != "closed"]
        if len(live) == 1:
            return live[0]
        if len(live) > 1:
            raise UsageError(f"{text} has {len(live)} open channels: give the channel ID (" +
                             ", ".join(short_id(c["channelId"]) for c in live[:5]) + ")")
        if by_peer:
            raise NotFound("open channel with", text)
        if HEX_ID.match(text):
            raise NotFound("channel", text)
        # Not an ID: a mistyped alias, most likely (`pay bobb 1`).
        raise NotFound("peer or channel", text)

    def _is_alias(self, text: str) -> bool:
        """Whether `text` is the alias of one of the session's contacts."""
        try:
            self.call("session_getPeer", sessionId=self.session_id(), alias=text)
        except ApiError as exc:
            if exc.code in (201, 203):  # no such contact, or no alias at all
                return False
            raise
        return True

    def full_id(self, kind: str, ref: str) -> str:
        """A proposal or update ID: resolved by the shell, or given in full."""
        if self.pending_resolver is not None:
            return self.pending_resolver(kind, ref)
        text = ref.strip()
        hex_part = text[2:] if text[:2].lower() == "0x" else text
        if not HEX_ID.match(text) or len(hex_part) != 64:
            raise UsageError(f"bad {kind} ID {ref!r}: expected 0x and 64 hex digits "
                             "(as `watch` prints it)")
        return "0x" + hex_part.lower()


def config_path(text: str) -> str:
    """The config path to send: made absolute when it exists relative to here (the node's
    working directory is not ours)."""
    path = Path(text).expanduser()
    if not path.is_absolute() and path.exists():
        return str(path.resolve())
    return str(path)


def _missing_config(exc: ApiError, typed: str, sent: str) -> CliError | None:
    """The error for a relative session file that is neither here nor on the node, naming the
    path the user typed (the node's error names the path it made of it in its own folder);
    None for any other error."""
    data = exc.error.get("data")
    if not isinstance(data, dict) or data.get("name") != "configFile" or \
            data.get("requirement") != "no such file" or Path(sent).is_absolute():
        return None
    return CliError(f"no session file {typed}: it is neither here ({Path.cwd()}) nor on the "
                    f"node, which looked for {data.get('value')}", exc.code, data)


def session_label(config: str) -> str:
    """A short name for a session: its folder for `.../alice/session.yaml`, else the stem."""
    path = Path(config)
    return path.parent.name if path.stem == "session" and path.parent.name else path.stem


# -- node --------------------------------------------------------------------------------------

def node_info(ctx: Context, args: argparse.Namespace) -> Result:
    """`node info`."""
    info = ctx.call("node_getConfig")
    style = ctx.style
    assets = ", ".join(
        f"{sym} ({a['decimals']} decimals" + (f", {a['address']})" if int(a["address"], 16)
                                               else ")")
        for sym, a in info.get("assets", {}).items())
    text = render.fields([
        ("node", f"{ctx.node_label} (perund {info.get('version')})"),
        ("chain", f"{info.get('chainId')} ({info.get('chainUrl')})"),
        ("adjudicator", style.ident(str(info.get("adjudicator")))),
        ("currencies", assets),
        ("comm types", ", ".join(info.get("commTypes", []))),
        ("answer within", render.seconds_text(float(info.get("responseTimeout", 0)))),
        *render.challenge_bounds(info),
    ], style)
    return Outcome(info, text)


def node_time(ctx: Context, args: argparse.Namespace) -> Result:
    """`node time`."""
    now = float(ctx.call("node_time"))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now))
    return Outcome(now, f"{now:.3f} ({stamp})")


# -- session -----------------------------------------------------------------------------------

def _same_file(one: str, other: str) -> bool:
    """Whether two paths name one file (the node's path is resolved on its machine: compare
    as this machine sees them, the common case of a local node)."""
    try:
        return os.path.samefile(one, other)
    except OSError:
        return os.path.normpath(one) == os.path.normpath(other)


def session_open(ctx: Context, args: argparse.Namespace) -> Result:
    """`session open CONFIG`: an already open session is used as it is. The session's own
    credential the node returns is written to --token-out, or shown (one-shot), or used by
    the shell from then on."""
    config = config_path(args.config)
    label = session_label(config)
    token_out = getattr(args, "token_out", None)
    if token_out:
        check_token_file_target(token_out)
    try:
        opened = ctx.opener.result("session_open", {"configFile": config})
    except ApiError as exc:
        missing = _missing_config(exc, args.config, config)
        if missing is not None:
            raise missing from None
        data = exc.error.get("data") or {}
        if exc.code == 202 and isinstance(data, dict) and data.get("type") == "session":
            opened_from = data.get("configFile")
            if isinstance(opened_from, str) and not _same_file(opened_from, config):
                # The user's session is open from another file: this one was neither opened
                # nor read, so saying "using it" under its name would hide what is in use.
                said = exc.error.get("message")
                raise CliError(f"{said}; {config} was not opened (its contents were not "
                               "checked): close that session first to open this file",
                               exc.code, data) from None
            session = "0x" + str(data.get("id", "")).removeprefix("0x")
            text = session if getattr(args, "quiet", False) else \
                f"session {ctx.style.ident(session)} ({label}) was open already: using it"
            if token_out:
                text += (f"\nno credential was written to {token_out} (the node returns one "
                         "when it opens a session): `token create --out FILE` mints one")
            return Outcome({"sessionId": session, "alreadyOpen": True}, text, session, label)
        raise
    session = str(opened["sessionId"])
    token = str(opened.get("token", ""))
    if token_out:
        write_token_file(token_out, token)
    if getattr(args, "quiet", False):
        return Outcome(opened, session, session, label, credential=token,
                       credential_file=token_out or None)
    restored = opened.get("restoredChannels", [])
    lines = [
        f"session {ctx.style.ident(session)} ({label}) is open",
        render.fields([
            ("off-chain", f"{opened.get('offChainAddress')} (signs channel states)"),
            ("on-chain", f"{opened.get('onChainAddress')} (deposits and payouts)"),
            ("channels", f"{len(restored)} restored" if restored else "none restored"),
            ("credential", credential_note(token, token_out, getattr(args, "in_shell", False))),
        ], ctx.style),
    ]
    if restored:
        lines.append(render.channel_rows(restored, ctx.style))
    return Outcome(opened, "\n".join(lines), session, label, credential=token,
                   credential_file=token_out or None)


def session_list(ctx: Context, args: argparse.Namespace) -> Result:
    """`session list`."""
    sessions = ctx.call("session_list")
    if not sessions:
        return Outcome(sessions, "no session is open on the node")
    rows = [[ctx.style.ident(s["sessionId"]), session_label(s["configFile"]), s["configFile"],
             str(s["openChannels"])] for s in sessions]
    return Outcome(sessions, render.table(["SESSION", "USER", "FILE", "OPEN CHANNELS"], rows,
                                          ctx.style))


def session_close(ctx: Context, args: argparse.Namespace) -> Result:
    """`session close [--force]`."""
    session = ctx.session_id()
    left = ctx.call("session_close", sessionId=session, force=bool(args.force))
    text = f"session {ctx.style.ident(session)} is closed"
    if left:
        stay = plural(len(left), "channel stays", "channels stay")
        text += f"; {stay} open and come back at the next open\n" + \
            render.channel_rows(left, ctx.style)
    return Outcome(left, text)


# -- peers -------------------------------------------------------------------------------------

def peer_list(ctx: Context, args: argparse.Namespace) -> Result:
    """`peer list`."""
    peers = ctx.call("session_listPeers", sessionId=ctx.session_id())
    return Outcome(peers, render.peer_rows(peers, ctx.style))


def peer_add(ctx: Context, args: argparse.Namespace) -> Result:
    """`peer add ALIAS ADDRESS COMMADDR`."""
    peer = ctx.call("session_addPeer", sessionId=ctx.session_id(), peer={
        "alias": args.alias, "offChainAddress": args.address,
        "commAddress": args.comm_address, "commType": args.comm_type})
    return Outcome(peer, f"added peer {peer['alias']} ({ctx.style.ident(peer['offChainAddress'])}"
                         f" at {peer['commAddress']}, {peer['commType']})")


def peer_get(ctx: Context, args: argparse.Namespace) -> Result:
    """`peer get ALIAS`."""
    peer = ctx.call("session_getPeer", sessionId=ctx.session_id(), alias=args.alias)
    return Outcome(peer, render.fields([
        ("alias", peer["alias"]), ("off-chain", ctx.style.ident(peer["offChainAddress"])),
        ("comm", f"{peer['commAddress']} ({peer['commType']})")], ctx.style))


def balance(ctx: Context, args: argparse.Namespace) -> Result:
    """`balance`: the session account's on-chain balances."""
    result = ctx.call("session_balance", sessionId=ctx.session_id())
    return Outcome(result, render.balance_rows(result, ctx.style))


# -- channels ----------------------------------------------------------------------------------

def channel_list(ctx: Context, args: argparse.Namespace) -> Result:
    """`channel list [--retired [--limit N]]`."""
    wanted = getattr(args, "limit", None)
    if not getattr(args, "retired", False):
        if wanted is not None:
            raise UsageError("--limit goes with --retired: the open and recently closed "
                             "channels are listed whole")
        channels = ctx.channels()
        return Outcome(channels, render.channel_rows(channels, ctx.style))
    wanted = DEFAULT_RETIRED_LIMIT if wanted is None else wanted
    retired: list[dict[str, Any]] = []
    before = None
    while len(retired) < wanted:
        params: dict[str, Any] = {"sessionId": ctx.session_id(),
                                  "limit": min(1000, wanted - len(retired))}
        if before is not None:
            params["before"] = before
        page = ctx.call("channel_listRetired", **params)
        retired += page["channels"]
        before = page["nextBefore"]
        if before is None:
            break
    return Outcome(retired, render.channel_rows(retired, ctx.style))


def channel_info(ctx: Context, args: argparse.Namespace) -> Result:
    """`channel info CHANNEL`."""
    channel = ctx.resolve_channel(args.channel)
    now = ctx.node_now() if channel.get("onChain") else None
    return Outcome(channel, render.channel_details(channel, ctx.style, now))


def _new_channel_status(ctx: Context, session: str, before: set[str], peer: str | None,
                        waiting: str) -> Callable[[], str]:
    """What an opening channel waits for, from the session's channel list."""
    def status() -> str:
        for c in ctx.quick("channel_list", sessionId=session):
            if c["channelId"] in before or (peer is not None and peer not in (
                    c["peer"], c.get("peerAddress"))):
                continue
            if c["phase"] == "proposing":
                return f"{c['peer']} accepted; exchanging signatures on the opening state"
            if c["phase"] == "funding" and c.get("kind") == "virtual":
                return (f"locking it in the ledger channel with {c.get('via')} "
                        f"(channel {short_id(c['channelId'])})")
            if c["phase"] == "funding":
                return f"waiting for both deposits on-chain (channel {short_id(c['channelId'])})"
        return waiting
    return status


def _opened(ctx: Context, verb: str) -> Callable[[Any], Outcome]:
    def finish(channel: Any) -> Outcome:
        if channel is None:
            return Outcome(None, "rejected")
        via = f" via {channel.get('via')}" if channel.get("kind") == "virtual" else ""
        return Outcome(channel, f"channel {ctx.style.ident(channel['channelId'])} with "
                                f"{channel['peer']}{via} is {ctx.style.ok(channel['phase'])}: "
                                f"{balances_pair(channel['balances'], channel['peer'])}, "
                                f"challenge {render.seconds_text(channel['challengeDuration'])}"
                                f"{verb}")
    return finish


def channel_open(ctx: Context, args: argparse.Namespace) -> Result:
    """`channel open PEER --self A --peer B [--via I [--max-fee F]]`: waits until funded."""
    if args.max_fee is not None and not args.via:
        raise UsageError("--max-fee goes with --via: it limits an intermediary's fee")
    session = ctx.session_id()
    currency = ctx.currency(args.currency)
    params: dict[str, Any] = {"sessionId": session, "peer": args.peer,
                              "balances": {currency: {"self": args.ours,
                                                      "peer": args.theirs}}}
    if args.challenge_duration:
        params["challengeDuration"] = duration(args.challenge_duration)
    if args.via:
        params["via"] = args.via
    if args.max_fee is not None:
        params["maxFee"] = {currency: args.max_fee}
    before = {c["channelId"] for c in ctx.channels()}
    what = f"a virtual channel with {args.peer} via {args.via}" if args.via \
        else f"a channel with {args.peer}"

    def call() -> Any:
        try:
            return ctx.call_long("channel_open", **params)
        except ApiError as exc:
            refusal = duration_refusal(exc, args.challenge_duration) \
                if args.challenge_duration else None
            if refusal is not None:
                raise refusal from None
            raise

    return Long(f"opening {what}", call,
                _new_channel_status(ctx, session, before, args.peer,
                                    f"waiting for {args.peer} to accept the proposal"),
                _opened(ctx, ""))


def _send(ctx: Context, args: argparse.Namespace, request: bool) -> Result:
    session = ctx.session_id()
    channel = ctx.resolve_channel(args.channel)
    peer, channel_id = channel["peer"], channel["channelId"]
    currency = ctx.currency(args.currency)
    payment = {"currency": currency, "payee": "self" if request else peer,
               "amount": args.amount}
    what = render.amount(args.amount, currency)

    def finish(result: Any) -> Outcome:
        head = (f"{peer} paid your request of {what}" if request
                else f"paid {what} to {peer}")
        return Outcome(result, f"{head} on channel {ctx.style.ident(short_id(channel_id))}: "
                               f"{balances_pair(result['balances'], peer)} "
                               f"{ctx.style.dim('(version ' + str(result['version']) + ')')}")

    waiting = (f"waiting for {peer} to answer the request" if request
               else f"waiting for {peer} to countersign")
    return Long(f"{'requesting' if request else 'paying'} {what} "
                f"{'from' if request else 'to'} {peer}",
                lambda: ctx.call_long("channel_send", sessionId=session, channelId=channel_id,
                                      payments=[payment],
                                      **({"reference": args.reference}
                                         if getattr(args, "reference", None) else {})),
                lambda: waiting, finish)


def pay(ctx: Context, args: argparse.Namespace) -> Result:
    """`pay CHANNEL AMOUNT`."""
    return _send(ctx, args, request=False)


def request(ctx: Context, args: argparse.Namespace) -> Result:
    """`request CHANNEL AMOUNT`: the peer is asked to pay."""
    return _send(ctx, args, request=True)


# -- answers -----------------------------------------------------------------------------------

def answer_proposal(ctx: Context, proposal_ref: str, accept: bool,
                    peer: str | None = None) -> Result:
    """Accept (waits until funded) or reject a proposal."""
    session = ctx.session_id()
    proposal = ctx.full_id("proposal", proposal_ref)
    if not accept:
        ctx.call("channel_respondProposal", sessionId=session, proposalId=proposal, accept=False)
        return Outcome(None, f"rejected proposal {ctx.style.ident(short_id(proposal))}")
    before = {c["channelId"] for c in ctx.channels()}
    return Long(f"accepting proposal {short_id(proposal)}" + (f" from {peer}" if peer else ""),
                lambda: ctx.call_long("channel_respondProposal", sessionId=session,
                                      proposalId=proposal, accept=True),
                _new_channel_status(ctx, session, before, peer,
                                    "exchanging signatures on the opening state"),
                _opened(ctx, ""))


def answer_update(ctx: Context, channel_ref: str, update_ref: str, accept: bool) -> Result:
    """Accept or reject an update (a payment request or a final state)."""
    session = ctx.session_id()
    update = ctx.full_id("update", update_ref)
    channel = ctx.resolve_channel(channel_ref)
    channel_id = channel["channelId"]

    def finish(result: Any) -> Outcome:
        verb = "accepted" if accept else "rejected"
        return Outcome(result, f"{verb} update {ctx.style.ident(short_id(update))} on channel "
                               f"{ctx.style.ident(short_id(channel_id))}: "
                               f"{balances_pair(result['balances'], result['peer'])}, phase "
                               f"{render.phase_text(result['phase'], ctx.style)}")

    return Long(f"{'accepting' if accept else 'rejecting'} update {short_id(update)}",
                lambda: ctx.call_long("channel_respondUpdate", sessionId=session,
                                      channelId=channel_id, updateId=update, accept=accept),
                lambda: f"waiting for the node to answer {channel['peer']}", finish)


def proposal_answer(ctx: Context, args: argparse.Namespace) -> Result:
    """`proposal accept|reject PROPOSAL`."""
    return answer_proposal(ctx, args.proposal, args.action == "accept")


def update_answer(ctx: Context, args: argparse.Namespace) -> Result:
    """`update accept|reject CHANNEL UPDATE`."""
    return answer_update(ctx, args.channel, args.update, args.action == "accept")


Handler = Callable[[Context, argparse.Namespace], Result]

HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("node", "info"): node_info,
    ("node", "time"): node_time,
    ("session", "open"): session_open,
    ("session", "list"): session_list,
    ("session", "close"): session_close,
    ("peer", "list"): peer_list,
    ("peer", "add"): peer_add,
    ("peer", "get"): peer_get,
    ("channel", "open"): channel_open,
    ("channel", "list"): channel_list,
    ("channel", "info"): channel_info,
    ("pay", None): pay,
    ("request", None): request,
    ("balance", None): balance,
    ("proposal", "accept"): proposal_answer,
    ("proposal", "reject"): proposal_answer,
    ("update", "accept"): update_answer,
    ("update", "reject"): update_answer,
}
"""(command, action) → handler, for every command both modes share."""

