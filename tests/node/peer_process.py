"""A node process for crash tests: one NodeService with one session, driven by JSON lines.

Run: `python tests/node/peer_process.py NODE_CONFIG SESSION_FILE`. It starts the node, opens the
session and prints `{"event": "ready", ...}`; then it reads commands from stdin, one JSON object a
line, and prints what happens, one JSON object a line, flushed at once (a test may SIGKILL the
process at any moment and must know exactly what the user was told):

  {"cmd": "open", "peer": ALIAS, "ours": WEI, "theirs": WEI}   -> {"event": "opened", "channel"}
  {"cmd": "pay", "channel": HEX, "amount": WEI, "count": N}    -> {"event": "paid", "version"} * N
      (with "keep_going": true, a failed payment is reported and the next one follows; with
      "pause": S, S seconds pass between payments)
  {"cmd": "stop"}                       -> {"event": "stopped"}: pay loops make no more payments,
      printed once every loop has ended (its payment in flight paid or failed)
  {"cmd": "state", "channel": HEX}                             -> {"event": "state", ...}
  {"cmd": "history", "channel": HEX}   -> {"event": "history", "payments": [...]}, oldest first

Incoming proposals are accepted; every state that becomes current from the peer is reported as
{"event": "received", "version"} (what the user of this side was told). Every signature on a
state that leaves this node or arrives from its peer is reported, before it is sent or handled,
as {"event": "signed", "by": ADDRESS, "version", "signature"}, so that a test sees every
signature of a node across its restarts (those it made before its hooks were set after a
restart, its peer saw).

With PERUND_PEER_LOG=1 in the environment, the node's log goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from typing import Any

from twisted.internet import reactor, stdio, task
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.protocols.basic import LineReceiver

from perund.channel import events as ev
from perund.channel.proposal import OpenRequest
from perund.channel.types import ETH, ChannelID
from perund.config import load_node_config
from perund.errors import PerundError, ResourceExists
from perund.node import NodeService
from perund.session.notices import ChannelNotice, Notice, ProposalNotice
from perund.session.session import Session
from perund.wire.messages import Update, UpdateAccept


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Commands(LineReceiver):
    delimiter = b"\n"

    def __init__(self, session: Session, done: Deferred[None]) -> None:
        self.session = session
        self.done = done
        self.stopped = False
        self.loops: set[Deferred[None]] = set()

    def lineReceived(self, line: bytes) -> None:
        command = json.loads(line)
        running = Deferred.fromCoroutine(self.run(command))
        running.addErrback(
            lambda f: emit(event="error", error=f.getErrorMessage(), kind=type(f.value).__name__))
        if command["cmd"] == "pay" and not running.called:
            # A payment the client holds (e.g. until the restarted peer's Sync, then retried
            # above its reservation) is staged on no channel yet: "stopped" waits for it, so
            # that a test reading the channels afterwards sees every payment made.
            self.loops.add(running)
            running.addBoth(lambda _: self.loops.discard(running))

    async def run(self, command: dict[str, Any]) -> None:
        client = self.session.client
        if command["cmd"] == "open":
            peer = self.session.contacts.by_alias(command["peer"]).off_chain_address
            channel = await client.open_channel(OpenRequest(
                peer, (ETH,), ((int(command["ours"]), int(command["theirs"])),), 600))
            emit(event="opened", channel=channel.channel_id.hex())
        elif command["cmd"] == "pay":
            cid = ChannelID(bytes.fromhex(command["channel"]))
            for _ in range(int(command["count"])):
                if self.stopped:
                    break
                try:
                    channel = await client.send(cid, ((ETH, int(command["amount"])),))
                except PerundError as exc:
                    if not command.get("keep_going"):
                        raise
                    emit(event="error", error=str(exc), kind=type(exc).__name__)
                    continue
                emit(event="paid", version=channel.latest.version)
                if command.get("pause"):
                    await task.deferLater(reactor, float(command["pause"]))
        elif command["cmd"] == "stop":
            self.stopped = True
            await DeferredList(list(self.loops))
            emit(event="stopped")
        elif command["cmd"] == "state":
            channel = client.channels[ChannelID(bytes.fromhex(command["channel"]))]
            emit(event="state", version=channel.latest.version,
                 balances=[[str(a) for a in row] for row in channel.latest.balances],
                 phase=channel.phase.value, needs_sync=channel.needs_sync,
                 staged=channel.staged is not None)
        elif command["cmd"] == "history":
            from perund.storage.history import PaymentQuery

            query = PaymentQuery(channel_id=ChannelID(bytes.fromhex(command["channel"])))
            found, cursor = [], None
            while True:
                page = self.session.store.history.page(query, 1000, cursor)
                found += page.payments
                cursor = page.next_cursor
                if cursor is None:
                    break
            emit(event="history", payments=[
                {"version": r.version, "amount": str(r.amount), "direction": r.direction,
                 "status": r.status, "request": r.request, "id": r.payment_id}
                for r in reversed(found)])

    def connectionLost(self, reason: object = None) -> None:
        if not self.done.called:
            self.done.callback(None)


def report_signatures(session: Session) -> None:
    """Report every signature on a state that leaves the node or comes from its peer."""
    client = session.client
    me = client.address.hex()

    def signed(by: str, version: int, signature: bytes) -> None:
        emit(event="signed", by=by, version=version, signature=signature.hex())

    def sending(handler: Any, event: Any) -> None:
        if isinstance(event, ev.SendUpdate):
            signed(me, event.state.version, event.signature)
        elif isinstance(event, ev.SendUpdateAccept):
            signed(me, event.version, event.signature)
        handler(event)

    for kind in (ev.SendUpdate, ev.SendUpdateAccept):
        client._handlers[kind] = partial(sending, client._handlers[kind])
    received = client.inbox.message_received

    def receiving(peer: Any, msg: Any) -> None:
        if isinstance(msg, Update):
            signed(peer.hex(), msg.state.version, msg.signature)
        elif isinstance(msg, UpdateAccept):
            signed(peer.hex(), msg.version, msg.signature)
        received(peer, msg)

    client.inbox.message_received = receiving  # type: ignore[method-assign]


async def main(node_file: str, session_file: str) -> None:
    if os.environ.get("PERUND_PEER_LOG"):
        # The node's log on stderr (the test's node-process.log), to read after a failure.
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)],
                                         redirectStandardIO=False)
    node = NodeService(reactor, load_node_config(node_file))
    node.startService()
    await node.ready
    try:
        try:
            session = await node.open_session(session_file)
        except ResourceExists:
            # A restart: the node opened the session again by itself.
            (session,) = node.sessions.values()
    except Exception as exc:
        # Say so and exit, so the test fails at once with the reason, not at its timeout.
        emit(event="failed", error=str(exc))
        await node.stopService()
        raise

    def observe(notice: Notice) -> None:
        if isinstance(notice, ProposalNotice):
            session.client.respond_proposal(notice.proposal.proposal_id, True)
        elif isinstance(notice, ChannelNotice) and isinstance(notice.event, ev.NewState) \
                and notice.event.source is not ev.Source.OWN:
            emit(event="received", version=notice.event.state.version)

    session.client.observers.append(observe)
    report_signatures(session)
    emit(event="ready", restored=[c.channel_id.hex() for c in session.restored])
    done: Deferred[None] = Deferred()
    stdio.StandardIO(Commands(session, done))
    await done
    await node.stopService()


if __name__ == "__main__":
    task.react(lambda _: Deferred.fromCoroutine(main(sys.argv[1], sys.argv[2])))
