"""ChannelClient: ties the pure channel core to peer links, storage and the chain.

The client is the imperative shell of docs/conventions.md: it turns peer messages, user
requests, timers and chain news into core inputs (`perund.channel.changes`), runs `transition`,
and executes the events it returns, in order (`executor.Executor`): a `Persist` with `wait` is
made durable (the store's `flush`, group commit allowed) before any later event runs, so no
message or report that depends on a write goes out before the write (docs/specification.md §5,
docs/protocol.md "Durability by interest").

It keeps three things itself: applying changes, what a broken store stops, and the dispatch of
the core's events (one table, `_handlers`: each event type to the part that carries it out).
The rest is done by parts with their own state and a small interface, each a module of this
package:

- `inbox.Inbox`: the owner of the peer links: messages in, matched to core inputs;
- `outbox.Outbox`: the core's messages out, and the answers to our update requests;
- `sending.SendQueue`: our updates, one in flight per channel, waiting payments merged, retries;
- `questions.Questions`: proposals and update questions waiting for our user, their expiry;
- `opening.Opening`: our proposals, and our user's answers to the peer's;
- `duties.ChainDuties`: funding and settlement transactions, and their retries;
- `patience.Patience`: settling the channels of a peer unreachable past the user's patience;
- `outcomes.Outcomes`: the users waiting for a channel to open or close;
- `closing.Closing`: our user's closes, cooperative or through a dispute;
- `virtual.Virtuals`, `intermediary.Intermediary`: virtual channels, as a party and as the
  intermediary (docs/protocol.md "Virtual channels").

What it needs from outside are the ports of `perund.session.ports` (PeerLinks, Funder,
Settler); what it tells the user are the notices of `perund.session.notices`.

Everything runs on the reactor thread; transitions of one channel therefore never interleave.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from perund.channel import events as ev
from perund.channel.changes import (
    ChainLost,
    Change,
    ConclusionLost,
    ForceClose,
    RespondUpdate,
    Restored,
    UserTimedOut,
)
from perund.channel.encoding import Signer
from perund.channel.fees import FeeSchedule
from perund.channel.machine import transition
from perund.channel.phases import TERMINAL, Phase
from perund.channel.proposal import Deployment, OpenRequest
from perund.channel.records import Channel
from perund.channel.types import Address, ChannelID
from perund.channel.virtual import is_virtual
from perund.channel.virtual_opening import VirtualOpenRequest
from perund.errors import FailedPrecondition, PerundError, ResourceNotFound
from perund.session.chain_check import AssetLabel, default_label
from perund.session.closing import Closing
from perund.session.config import IntermediaryConfig
from perund.session.duties import ChainDuties, OnChain
from perund.session.executor import Executor
from perund.session.fees import FeeBook
from perund.session.guard import store_intact
from perund.session.held_close import HeldCloses
from perund.session.inbox import Inbox
from perund.session.intermediary import Intermediary
from perund.session.memos import Memos
from perund.session.notices import ChannelNotice, Notice, Observer, tell
from perund.session.opening import Opening
from perund.session.outbox import Outbox
from perund.session.outcomes import Outcomes
from perund.session.patience import Patience
from perund.session.payouts import Payouts
from perund.session.pending import QuestionRecords
from perund.session.ports import Funder, PeerLinks, Settler
from perund.session.questions import Questions
from perund.session.resync import ResyncWaits
from perund.session.sending import SendQueue, Transfers
from perund.session.timing import Timing, TimingKnobs
from perund.session.virtual import Virtuals
from perund.storage import ChannelStore
from perund.storage.payments import Status

log = Logger(namespace="perund.client")

_P = ParamSpec("_P")
_T = TypeVar("_T")

Events = Sequence[ev.Event]


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


class ChannelClient(TimingKnobs):
    """One user's channels: open, pay, request, answer, close; over authenticated peer links.

    The client attaches its `inbox` to `peers` as their owner (detached at `stop`). `funder` and
    `settler` do the on-chain part; `is_contact` says whether a proposal's sender is known.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        signer: Signer,
        receiver: Address,
        peers: PeerLinks,
        deployment: Deployment,
        store: ChannelStore,
        funder: Funder,
        settler: Settler,
        is_contact: Callable[[Address], bool],
        response_timeout: float = 60.0,
        request_timeout: float = 10.0,
        confirm_updates: bool = False,
        settle_retry_delay: float = 5.0,
        dispute_after: float | None = None,
        intermediary: IntermediaryConfig | None = None,
        fee_schedule: FeeSchedule | None = None,
        asset_label: AssetLabel = default_label,
        rng: random.Random | None = None,
    ) -> None:
        # Any: zope interfaces do not type-check as protocols without the mypy-zope plugin.
        self._reactor: Any = reactor
        self.signer = signer
        self.address: Address = signer.address
        self.receiver = receiver
        self.peers = peers
        self.deployment = deployment
        self.store = store
        self.funder = funder
        self.settler = settler
        self.is_contact = is_contact
        self.confirm_updates = confirm_updates
        self.timing = Timing(response_timeout, request_timeout, settle_retry_delay)
        self.observers: list[Observer] = []
        self.channels: dict[ChannelID, Channel] = {}
        self.stopped = False
        self.store_error: FailedPrecondition | None = None
        """Set once the store failed to make a write durable; every user request then fails
        with it (see `_store_broken`)."""
        self._by_peer: dict[Address, set[ChannelID]] = {}
        self._memos = Memos(store, reactor)
        self._resync = ResyncWaits(reactor, self.timing)
        """Sends held until their restarted channel has the peer's Sync."""
        self._sends = SendQueue(reactor, signer=signer, links=peers, timing=self.timing,
                                channels=self.channels, commit=self._commit, memos=self._memos)
        self._questions = Questions(reactor, links=peers, timing=self.timing,
                                    records=QuestionRecords(store), notify=self._notify,
                                    time_out_update=self._user_timed_out)
        self._duties = ChainDuties(reactor, funder=funder, settler=settler, timing=self.timing,
                                   channels=self.channels, apply=self._apply)
        self._patience = Patience(reactor, links=peers, channels=self.channels,
                                  force_close=self._force_close)
        serving = intermediary or IntermediaryConfig()
        self.fees = FeeBook(store)
        self.intermediary = Intermediary(
            reactor, enabled=serving.enabled, window=serving.lock_window,
            signer=signer, links=peers, channels=self.channels, store=store, apply=self._apply,
            deployment=deployment,
            registered=lambda vid: self._virtual.disputes.registered(vid), schedule=fee_schedule,
            fees=self.fees, asset_label=asset_label)
        self._virtual = Virtuals(
            reactor, signer=signer, deployment=deployment, links=peers, timing=self.timing,
            channels=self.channels, questions=self._questions, sends=self._sends,
            confirm_updates=confirm_updates, start=self._start, apply=self._apply,
            execute=self._execute, settle=self._duties.settle, is_contact=self._is_contact,
            registrations=self.intermediary.registration, proofs=self.intermediary.proof,
            not_open_yet=lambda cid, error: self._outcomes.not_open_yet(cid, error),
            fees=self.fees, asset_label=asset_label, rng=rng)
        self._opening = Opening(reactor, signer=signer, receiver=receiver,
                                deployment=deployment, confirm_updates=confirm_updates,
                                links=peers, timing=self.timing, questions=self._questions,
                                start=self._start, execute=self._execute,
                                answer_virtual=self._virtual.answer, channels=self.channels,
                                apply=self._apply,
                                not_open_yet=lambda cid, error: self._outcomes.not_open_yet(
                                    cid, error))
        self.refusals: list[Callable[[ChannelID, bool], PerundError | None]] = []
        """What else may keep a channel from taking an update now, each asked with whether
        the update winds the channel down (a close, a virtual channel's fold): a nearly full
        disk (`perund.disk_guard`)."""
        self.holds: HeldCloses | None = None
        """The channels held because the chain lost their deposits (`held_close`)."""
        self.inbox = Inbox(signer=signer, deployment=deployment, links=peers,
                           channels=self.channels, by_peer=self._by_peer,
                           questions=self._questions, is_contact=self._is_contact,
                           apply=self._apply, execute=self._execute, memos=self._memos,
                           virtual=self._virtual, intermediary=self.intermediary,
                           refused=self.updates_refused)
        """The owner of the peer links: what the peers send comes in there."""
        self._outbox = Outbox(links=peers, timing=self.timing, channels=self.channels,
                              route=self.inbox.message_received, apply=self._apply,
                              memos=self._memos)
        self.payouts = Payouts(store)
        """What each conclusion paid our receiver, and what of it is credited (the store's)."""
        self._outcomes = Outcomes(
            links=peers, channels=self.channels, by_peer=self._by_peer, notify=self._notify,
            funding_error=lambda cid: self._virtual.lock_error(cid)
            or self._duties.funding_error(cid), payouts=self.payouts)
        self._closing = Closing(reactor, channels=self.channels, store=self.store,
                                stopped=lambda: self.stopped, rng=rng,
                                final=lambda cid: self.send(cid, (), True),
                                apply=self._apply, closed_later=self._outcomes.closed_later,
                                refusal=self._close_refusal,
                                forced_refusal=self._forced_close_refusal,
                                folds_done=self._virtual.folds_done)
        self._handlers: dict[type[ev.Event], Callable[[Any], None]] = {
            ev.SendAccept: self._outbox.send_accept,
            ev.SendReject: self._outbox.send_reject,
            ev.SendUpdate: self._outbox.send_update,
            ev.SendUpdateAccept: self._outbox.send_update_accept,
            ev.SendUpdateReject: self._outbox.send_update_reject,
            ev.SendVirtualAccept: self._outbox.send_virtual_accept,
            ev.SendSync: self._outbox.send_sync,
            ev.SendChannelClosed: self._outbox.send_channel_closed,
            ev.Refused: self._outbox.refused,
            ev.ProposalRefused: self._outbox.proposal_refused,
            ev.ProposalReceived: self._ignore,
            ev.NewState: self._new_state,
            ev.UpdateFailed: self._update_failed,
            ev.UpdateNeedsUser: self._needs_user,
            ev.UpdateWithdrawn: self._withdrawn,
            ev.Fund: self._fund,
            ev.Opened: self._outcomes.opened,
            ev.FundingFailed: self._outcomes.funding_failed,
            ev.Register: self._virtual.disputes.register,
            ev.ConcludeFinal: self._duties.settle,
            ev.Conclude: self._virtual.disputes.conclude,
            ev.LockParent: self._virtual.lock_parent,
            ev.FoldParent: self._virtual.fold_parent,
            ev.AwaitingMatch: self.intermediary.awaiting,
            ev.Disputed: self._outcomes.disputed,
            ev.Conflict: self._outcomes.conflict,
            ev.Closed: self._outcomes.closed,
            ev.Lost: self._outcomes.given_up,
        }
        self._executor = Executor(store, self._handlers, is_broken=self._store_trouble,
                                  broken=self._store_broken)
        peers.attach(self.inbox)
        if dispute_after is not None:
            self.watch_peers(dispute_after)

    # -- lifecycle ------------------------------------------------------------------------------

    def restore(self, lost: Mapping[ChannelID, str] | None = None,
                unconcluded: Iterable[ChannelID] = ()) -> list[Channel]:
        """Load every channel from the store and resume it (after a restart); the channels.
        Those in `lost` (channel → what the chain lacks) are given up instead of resumed:
        nothing is sent for them, on- or off-chain. Closed ones in `unconcluded` (the chain
        lost their conclusion) settle again. Then the user is told of the questions the last
        stop left unanswered.

        A resumed channel waits for its peer's Sync (`Channel.resyncing`), which a new
        connection brings: a link that is up already (it came up before this restore) is
        closed, and comes back as a new one."""
        restored = []
        resyncing: set[Address] = set()
        settle_again = set(unconcluded)
        for channel in self.store.channels():
            self._track(channel)
            if channel.channel_id in settle_again:
                self._apply(channel.channel_id, ConclusionLost())
            elif channel.phase not in TERMINAL:
                detail = (lost or {}).get(channel.channel_id)
                self._apply(channel.channel_id,
                            Restored() if detail is None else ChainLost(detail))
            resumed = self.channels[channel.channel_id]
            if resumed.phase is Phase.PROPOSING and not is_virtual(resumed):
                self._opening.wait_for_version_zero(resumed.channel_id)
            if resumed.resyncing:
                resyncing.add(resumed.peer)
            restored.append(resumed)
        for peer in resyncing:
            if self.peers.is_connected(peer):
                self.peers.disconnect(peer).addErrback(
                    lambda f: log.failure("closing a link for a resync failed", f))
        self._memos.restore(self.channels)
        self._questions.tell_gone(self.channels)
        self._closing.resume()
        return restored

    def release(self, channel_id: ChannelID) -> None:
        """Forget a closed channel the store has retired (perund.session.retirement): nothing
        of it stays in memory."""
        channel = self.channels.pop(channel_id)
        known = self._by_peer.get(channel.peer)
        if known is not None:
            known.discard(channel_id)
            if not known:
                del self._by_peer[channel.peer]
        self._sends.forget(channel_id)

    def watch_peers(self, dispute_after: float) -> None:
        """Settle on-chain (ForceClose) the open channels with a peer that has been unreachable
        for `dispute_after` seconds (`perund.session.patience`)."""
        self._patience.watch(dispute_after)

    def stop(self) -> None:
        """Stop acting: pending timers are cancelled and later news (a deposit mined, an
        answer arriving) is ignored, so nothing is written after the session's store closes.
        Whatever was in flight is resumed from the store at the next `restore`. Questions
        waiting for our user are rejected to their peers (who would otherwise wait for their
        expiry); their records stay, so that the user learns of them at the next `restore`."""
        for channel_id, update_id in self._questions.stop():
            if channel_id in self.channels and self.store_error is None:
                self._apply(channel_id, UserTimedOut(update_id))
        self.stopped = True
        self.intermediary.stop()
        self._virtual.stop()
        self._opening.stop()
        self._resync.release_all()
        self.peers.detach(self.inbox)
        self._sends.stop()
        self._duties.stop()
        self._patience.stop()

    # -- the user's requests --------------------------------------------------------------------

    @store_intact
    def open_channel(self, request: OpenRequest | VirtualOpenRequest) -> Deferred[Channel]:
        """Propose a channel to `request.peer` (a virtual one through an intermediary for a
        `VirtualOpenRequest`); fires with it once funded and open."""
        if isinstance(request, VirtualOpenRequest):
            return Deferred.fromCoroutine(self._virtual.propose(request))
        return Deferred.fromCoroutine(self._opening.propose(request))

    def proposed_deposits(self, proposal_id: bytes) -> dict[Address, int]:
        """What accepting the waiting proposal `proposal_id` would have us deposit, per asset
        (if none waits, the error a late answer gets: `Questions.proposal`)."""
        return self._opening.deposits(proposal_id)

    def proposed_assets(self, proposal_id: bytes) -> tuple[Address, ...]:
        """The assets the waiting proposal `proposal_id` would have the channel hold, ledger or
        virtual (if none waits, the error a late answer gets)."""
        return tuple(self._questions.proposal(proposal_id).assets)

    @store_intact
    def respond_proposal(self, proposal_id: bytes, accept: bool) -> Deferred[Channel | None]:
        """Answer a `ProposalNotice`: accept (fires with the channel once funded and open) or
        reject (fires with None)."""
        return Deferred.fromCoroutine(self._opening.answer(proposal_id, accept))

    @store_intact
    def send(self, channel_id: ChannelID, transfers: Transfers, is_final: bool = False,
             reference: str | None = None) -> Deferred[Channel]:
        """Pay (`amount > 0`) or request (`< 0`) per `(asset, amount)`, or finalise; fires with
        the channel once the peer countersigned and the state is durable. A `reference`
        travels with the update to the peer, into both sides' payment histories.

        One update is in flight per channel; sends made meanwhile wait their turn, and waiting
        payments (positive amounts only) go out together in one update, so many callers on one
        channel share each round trip and each fsync (`perund.session.sending`). After a
        restart, sends wait until the peer's Sync is in (`Channel.resyncing`), and while an
        update of ours is unresolved (`Channel.abandoned`) they wait for its answer, each at
        most `request_timeout` seconds.
        """
        refused = self.updates_refused(channel_id, is_final)
        if refused is not None:
            return fail(refused)
        channel = self.channels.get(channel_id)
        if channel is not None and channel.resyncing and not self.stopped:
            return self._resync.hold(channel_id).addCallback(
                lambda _: self._send_resynced(channel_id, transfers, is_final, reference))
        return self._sends.send(channel_id, transfers, is_final, reference)

    def _send_resynced(self, channel_id: ChannelID, transfers: Transfers, is_final: bool,
                       reference: str | None) -> Deferred[Channel]:
        if self.store_error is not None:  # it broke meanwhile
            return fail(self.store_error)
        return self._sends.send(channel_id, transfers, is_final, reference)

    @store_intact
    def respond_update(self, channel_id: ChannelID, update_id: bytes,
                       accept: bool) -> Deferred[Channel]:
        """Answer an `UpdateNotice`; fires with the channel afterwards."""
        return Deferred.fromCoroutine(self._respond_update(channel_id, update_id, accept))

    async def _respond_update(self, channel_id: ChannelID, update_id: bytes,
                              accept: bool) -> Channel:
        staged = self.channels[channel_id].staged if channel_id in self.channels else None
        refused = self.updates_refused(
            channel_id, staged is not None and staged.state.is_final) if accept else None
        if refused is not None:
            raise refused
        self._questions.take_update(channel_id, update_id)
        self._answer(channel_id, update_id, RespondUpdate(self.signer, update_id, accept),
                     None if accept else "rejected")
        channel = self.channels[channel_id]
        pending = self.store.flush()
        if pending is not None:
            try:
                await pending
            except Exception:
                # The user is told the session's store error, not its internals.
                if self.store_error is not None:
                    raise self.store_error from None
                raise
        return channel

    @store_intact
    def close(self, channel_id: ChannelID, peer_wait: float | None = None) -> Deferred[Channel]:
        """Close cooperatively: a final update, then settlement; fires once closed on-chain.
        A peer that cannot be reached is waited for `peer_wait` seconds (None: the default,
        `closing.PEER_WAIT`), then the channel is settled on-chain without it."""
        return Deferred.fromCoroutine(self._closing.close(channel_id, peer_wait))

    @store_intact
    def force_close(self, channel_id: ChannelID,
                    accept_deposits_back: bool = False) -> Deferred[Channel]:
        """Settle on-chain without the peer; fires once closed. A channel held for the peer's
        lost deposit closes only with `accept_deposits_back` (`held_close`)."""
        return Deferred.fromCoroutine(
            self._closing.force_close(channel_id, accept_deposits_back))

    def updates_refused(self, channel_id: ChannelID, winding_down: bool,
                        hold: bool = True) -> PerundError | None:
        """Why `channel_id` takes no update now (its hold, unless `hold` is False; else the
        first of `refusals` to say), or None."""
        refused = self.holds.refusal(channel_id) if hold and self.holds is not None else None
        for refusal in self.refusals:
            refused = refused or refusal(channel_id, winding_down)
        return refused

    def _close_refusal(self, channel_id: ChannelID) -> None:
        self._virtual.close_refusal(channel_id)
        refused = self.updates_refused(channel_id, True)  # a close
        if refused is not None:
            raise refused

    def _forced_close_refusal(self, channel_id: ChannelID, accept_deposits_back: bool) -> None:
        """As `_close_refusal`, but a held channel by its own rule (`HeldCloses`)."""
        self._virtual.close_refusal(channel_id)
        refused = None if self.holds is None \
            else self.holds.forced_close_refusal(channel_id, accept_deposits_back)
        refused = refused or self.updates_refused(channel_id, True, hold=False)
        if refused is not None:
            raise refused

    def chain_input(self, channel_id: ChannelID, change: Change) -> None:
        """Feed news from the chain (the watcher): Funded, Registered, Concluded, ..."""
        if channel_id in self.channels:
            self._apply(channel_id, change)

    def _channel(self, channel_id: ChannelID) -> Channel:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise ResourceNotFound("no such channel", type="channel", id=_hex(channel_id))
        return channel

    # -- applying changes, durably --------------------------------------------------------------

    def _apply(self, channel_id: ChannelID, change: Change, user: bool = False) -> None:
        """Run the core on `change` and execute its events. A user's change that the core
        refuses raises (the user is told); any other is logged and the channel left as is."""
        if self.stopped:
            if user:
                raise FailedPrecondition("the session is closing")
            return
        channel = self.channels[channel_id]
        try:
            new, events = transition(channel, change)
        except PerundError:
            if user:
                raise
            log.failure("channel {channel_id}: core refused {change}",
                        channel_id=_hex(channel_id), change=type(change).__name__)
            return
        except Exception:
            # A bug in the core must not take the node down with it; the channel is unchanged.
            log.failure("channel {channel_id}: core failed on {change}",
                        channel_id=_hex(channel_id), change=type(change).__name__)
            if user:
                raise
            return
        self.channels[channel_id] = new
        if channel.phase is Phase.FUNDING and new.phase is not Phase.FUNDING:
            self._duties.funding_over(channel_id)
        self._execute(events)
        self._virtual.changed(channel, self.channels[channel_id])
        if channel.resyncing and not new.resyncing:
            self._resync.resynced(channel_id)
        if new.phase is not Phase.UPDATING:
            self._sends.drain(channel_id)

    def _start(self, channel: Channel, events: Events) -> Deferred[Channel]:
        """A new channel (proposed or accepted): track it, run its first events (funding);
        fires once it is open."""
        opened = self._outcomes.opened_later(channel.channel_id)
        self._track(channel)
        self._execute(events)
        return opened

    def _commit(self, new: Channel, events: Events) -> None:
        """Make a staged update of ours current and execute its events (`SendQueue`)."""
        self.channels[new.channel_id] = new
        self._execute(events)

    def _user_timed_out(self, channel_id: ChannelID, update_id: bytes) -> None:
        if channel_id in self.channels:
            self._answer(channel_id, update_id, UserTimedOut(update_id), "expired")

    def _answer(self, channel_id: ChannelID, update_id: bytes, change: Change,
                declined: Status | None) -> None:
        """Our user's answer (or its absence) to the peer's update; a declined request goes
        into the history as such."""
        before = self.channels[channel_id]
        self._apply(channel_id, change, user=isinstance(change, RespondUpdate))
        if declined is not None:
            self._memos.declined(before, update_id, declined)

    def _is_contact(self, peer: Address) -> bool:
        return self.is_contact(peer)  # looked up at each proposal: it may be replaced

    def resettle(self, command: OnChain) -> None:
        """Send a settlement transaction again: the chain lost the one sent (a
        reorganisation, perund.session.unconfirmed); nothing if the channel has settled."""
        self._duties.settle(command)

    def _force_close(self, channel_id: ChannelID) -> None:
        """The patience with an unreachable peer ran out: settle on-chain, unless held (a
        forced close pays each side its deposit then: the user's decision, `held_close`)."""
        held = None if self.holds is None else self.holds.forced_close_refusal(channel_id, False)
        if held is not None:
            log.warn("channel {channel_id}: not settling it on-chain although its peer is "
                     "unreachable: {why}", channel_id=_hex(channel_id), why=held)
            return
        self._apply(channel_id, ForceClose())

    def _execute(self, events: Events) -> None:
        self._executor.execute(events)

    def _store_trouble(self) -> str | None:
        return None if self.store_error is None else self.store_error.message

    def _store_broken(self, why: str, rest: list[ev.Event]) -> None:
        """A write could not be made durable (a full or failing disk): nothing that depended
        on it may leave, so no message goes to a peer and no user hears of success, now or
        later. What the chain asks for still goes out, since registering or concluding a state
        both signed harms nobody: disputes keep being answered."""
        if self.store_error is None:
            self.store_error = FailedPrecondition(
                f"the session's store failed ({why}): nothing new can be "
                "signed. Fix the disk and restart the node; on-chain disputes are still "
                "answered meanwhile.")
            log.critical("the channel store failed to make a write durable: {error}; this "
                         "session signs nothing more until the node is restarted", error=why)
            self._sends.fail_everything(self.store_error)
            self._outcomes.fail_everything(self.store_error)
        for event in rest:
            if isinstance(event, OnChain):
                self._duties.settle(event)

    def _fund(self, e: ev.Fund) -> None:
        """Version 0 is fully signed: no wait for it any more; the deposits follow."""
        self._opening.version_zero_signed(e.channel_id)
        self._duties.fund(e)

    def _track(self, channel: Channel) -> None:
        self.channels[channel.channel_id] = channel
        self._virtual.track(channel)
        self._by_peer.setdefault(channel.peer, set()).add(channel.channel_id)
        if channel.phase not in TERMINAL:
            self.peers.keep_connected(channel.peer, True)

    def _notify(self, notice: Notice) -> None:
        tell(self.observers, notice)

    # -- routing: the core's events (`_handlers`) -----------------------------------------------

    def _ignore(self, event: ev.Event) -> None:
        pass

    def _new_state(self, e: ev.NewState) -> None:
        if e.source is ev.Source.OWN:
            self._sends.landed(e.channel_id, e.state.version)
        elif e.source is ev.Source.PEER:
            self._sends.peer_update_taken(e.channel_id)
        elif e.source is ev.Source.SYNC:
            self._sends.synced(e.channel_id)
        if self.observers:
            self._notify(ChannelNotice(self.channels[e.channel_id], e))

    def _update_failed(self, e: ev.UpdateFailed) -> None:
        if self.observers:
            self._notify(ChannelNotice(self.channels[e.channel_id], e))
        self._sends.failed(e)

    def _needs_user(self, e: ev.UpdateNeedsUser) -> None:
        self._questions.ask_update(self.channels[e.channel_id], e)

    def _withdrawn(self, e: ev.UpdateWithdrawn) -> None:
        self._questions.withdrawn(e.update_id)
        if not self.intermediary.holds(e.update_id):  # no question our user was asked
            self._notify(ChannelNotice(self.channels[e.channel_id], e))
