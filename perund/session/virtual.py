"""Virtual channels of a channel client, as a party (docs/protocol.md "Virtual channels").

Rules, stated once:

- **opening**: our user's `channel_open` with `via` first asks the intermediary its fee
  (`FeeQuery`; refused above the user's `maxFee`, which is 0 where not given), then proposes
  a virtual channel to the peer, funded by our open ledger channel with the intermediary that
  covers it and the fee (`VirtualPropose`, a request); the peer's user answers like any
  proposal. Our lock pays the quoted fee (kept in the `FeeBook` until the lock's fate is
  known, then recorded as paid in the ledger). Once version 0 is fully signed each
  party locks it in its ledger (`LockParent`: an update with the proof, through the send
  queue); the channel opens for a party once its own lock is fully signed (`Funded`), and
  closes (`LockFailed`) when that lock cannot become fully signed any more;
- **closing**: a final virtual state is folded into the ledger (`FoldParent`); once the fold is
  fully signed the virtual channel is closed (`Concluded`). A fold that met a passing failure
  (the intermediary away, or holding it in vain for the other party's fold) goes again for a
  while (`perund.session.fold_retries`); one the intermediary refuses as wrong or never
  answers, or failing past that, is settled on-chain: the ledger is disputed with the final
  state;
- **disputes**: registering and concluding through ledgers is `disputes`
  (`perund.session.virtual_disputes`). Once a virtual channel of ours is registered on-chain,
  our ledger settles on-chain too (it pays us our virtual outcome), and once the ledger is
  concluded its virtual channels are closed;
- a ledger that funds an open virtual channel is not closed (FailedPrecondition naming it).

The intermediary's side (matching locks and folds, its records) is `perund.session.intermediary`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from perund.api.amounts import format_amount
from perund.channel import events as ev
from perund.channel.changes import Change, Concluded, ForceClose, Funded, LockFailed
from perund.channel.encoding import Signer, random_share
from perund.channel.fees import fee_amounts, fee_field, within
from perund.channel.phases import SETTLING, TERMINAL, Phase
from perund.channel.proposal import Deployment
from perund.channel.records import Channel, Staged
from perund.channel.types import (
    Address,
    ChannelID,
    VirtualProof,
)
from perund.channel.virtual import is_virtual, locks_of, parent_of, proof_of
from perund.channel.virtual_opening import (
    VirtualOpenRequest,
    accept_virtual_proposal,
    complete_virtual_proposal,
    find_ledger,
    make_virtual_proposal,
    receive_virtual_proposal,
)
from perund.errors import (
    FailedPrecondition,
    PeerProtocolError,
    PeerRejected,
    PeerRequestTimedOut,
    PerundError,
)
from perund.peer.manager import undelivered
from perund.session.chain_check import AssetLabel, default_label
from perund.session.fees import FeeBook
from perund.session.fold_retries import FoldRetries
from perund.session.ports import PeerLinks
from perund.session.questions import IncomingProposal, Questions
from perund.session.sending import SendQueue
from perund.session.timing import Timing, VersionZeroWaits
from perund.session.virtual_disputes import Registration, VirtualDisputes
from perund.wire.messages import FeeQuery, FeeQuote, Reject, VirtualAccept, VirtualPropose

log = Logger(namespace="perund.virtual")

def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _pending_proof(parent: Channel, vid: ChannelID) -> bool:
    """Whether our update of `parent` that locks or folds `vid` is in flight or of unknown fate
    (it may still become fully signed)."""
    ours: tuple[Staged | None, ...] = (parent.abandoned, parent.staged)
    for staged in ours:
        if staged is None or staged.proposer != parent.index:
            continue
        before = locks_of(parent.current.state) if parent.current is not None else {}
        if (vid in before) != (vid in locks_of(staged.state)):
            return True
    return False


class Virtuals:
    """A client's virtual channels as a party (module doc). `start(channel, events)` tracks a
    new channel and fires once it is open, `apply(channel_id, change)` feeds a core,
    `execute(events)` runs events, `settle(command)` sends a transaction (ChainDuties), and
    `registrations` and `proofs` say what the chain and our records as an intermediary know of
    a virtual channel; `disputes` handles the core's `Register` and `Conclude`."""

    def __init__(self, reactor: Any, *, signer: Signer, deployment: Deployment,
                 links: PeerLinks,
                 timing: Timing, channels: Mapping[ChannelID, Channel], questions: Questions,
                 sends: SendQueue, confirm_updates: bool,
                 start: Callable[[Channel, Sequence[ev.Event]], Deferred[Channel]],
                 apply: Callable[[ChannelID, Change], None],
                 execute: Callable[[Sequence[ev.Event]], None],
                 settle: Callable[[Any], None], is_contact: Callable[[Address], bool],
                 registrations: Callable[[ChannelID], Registration | None],
                 proofs: Callable[[ChannelID], VirtualProof | None],
                 not_open_yet: Callable[[ChannelID, PerundError], None],
                 fees: FeeBook, asset_label: AssetLabel = default_label,
                 rng: random.Random | None = None) -> None:
        self._reactor = reactor
        self._signer = signer
        self._fees = fees
        self._asset_label = asset_label
        self._deployment = deployment
        self._links = links
        self._timing = timing
        self._channels = channels
        self._questions = questions
        self._sends = sends
        self._confirm = confirm_updates
        self._start = start
        self._apply = apply
        self._execute = execute
        self._is_contact = is_contact
        self.disputes = VirtualDisputes(channels=channels, settle=settle,
                                        registrations=registrations, proofs=proofs)
        """Registrations and conclusions through ledgers."""
        self._not_open_yet = not_open_yet
        self._children: dict[ChannelID, set[ChannelID]] = {}
        """Our ledger channels that fund virtual channels of ours: ledger → virtual IDs."""
        self._locking: set[ChannelID] = set()
        """Virtual channels whose lock or fold is queued or in flight in the send queue."""
        self._tried: set[ChannelID] = set()
        """Virtual channels whose lock went out (a failure then closes them)."""
        self._retries = FoldRetries(reactor, self._fold_now, rng)
        """Folds that failed and go again."""
        self._folds_asked: set[ChannelID] = set()
        """Virtual channels whose fold the core asked for (`FoldParent`) since the start."""
        self._fold_waits: dict[ChannelID, list[Deferred[None]]] = {}
        """Ledgers whose close waits for their final virtual channels to fold."""
        self._lock_errors: dict[ChannelID, PerundError] = {}
        self._v0_waits = VersionZeroWaits(reactor, timing, self._v0_expired)
        """Virtual channels we accepted, waiting for the proposer to countersign version 0."""

    # -- tracking -------------------------------------------------------------------------------

    def track(self, channel: Channel) -> None:
        """Index a virtual channel of ours under its parent (at start and when it is made)."""
        if is_virtual(channel) and channel.phase not in TERMINAL:
            self._children.setdefault(parent_of(channel), set()).add(channel.channel_id)

    def stop(self) -> None:
        """Cancel the waits for version 0 (a channel still proposing closes at the next
        start) and the folds' pauses (the next start folds again)."""
        self._v0_waits.stop()
        self._retries.stop()

    def lock_error(self, channel_id: ChannelID) -> PerundError | None:
        """Why a virtual channel's lock failed, for the user waiting for it to open (once)."""
        return self._lock_errors.pop(channel_id, None)

    def close_refusal(self, channel_id: ChannelID) -> None:
        """FailedPrecondition if `channel_id` is a ledger that funds an open virtual channel,
        ours or one we are the intermediary of (it cannot close before the virtual channel
        does), or a virtual channel not open yet (it opens or closes by itself once its lock's
        fate is known)."""
        channel = self._channels.get(channel_id)
        if channel is not None and is_virtual(channel) \
                and channel.phase in (Phase.PROPOSING, Phase.FUNDING):
            raise FailedPrecondition(
                "the virtual channel is not open yet: it opens once our lock is signed, or "
                "closes by itself if it cannot be", channel_id=_hex(channel_id),
                phase=channel.phase.value)
        folding = self._folding(channel_id)
        funded = [vid for vid in self._children.get(channel_id, ())
                  if self._holds_funds(vid, channel_id) and vid not in folding]
        if funded:
            raise FailedPrecondition(
                "this channel funds open virtual channels: close them first",
                channel_id=_hex(channel_id), virtual_channels=[_hex(vid) for vid in funded])
        # The locks of virtual channels we are no party of (we are their intermediary): a
        # final state locks nothing, so a close would take the ledger, and with it those
        # channels, on-chain with the oldest state we hold of them.
        others = [] if channel is None or is_virtual(channel) else [
            vid for vid in self._locks(channel) if vid not in folding]
        if others:
            raise FailedPrecondition(
                "this channel funds virtual channels we are the intermediary of: it can close "
                "cooperatively once they are closed", channel_id=_hex(channel_id),
                virtual_channels=[_hex(vid) for vid in others])

    def _folding(self, ledger_id: ChannelID) -> list[ChannelID]:
        """The virtual channels of ours that ledger `ledger_id` still locks although their
        final state is signed: their folds are under way (or go again once the intermediary
        is back), and end with the lock gone or the ledger on-chain."""
        ledger = self._channels.get(ledger_id)
        if ledger is None or ledger.phase not in (Phase.OPEN, Phase.UPDATING):
            return []
        locked = self._locks(ledger)
        return [vid for vid in self._children.get(ledger_id, ())
                if vid in locked and (child := self._channels.get(vid)) is not None
                and child.phase is Phase.CLOSING and child.latest.is_final]

    def folds_done(self, ledger_id: ChannelID) -> Deferred[None] | None:
        """None if ledger `ledger_id` has no fold under way (`_folding`), else a Deferred
        firing once it has none: a close of the ledger waits for it instead of being refused
        for a virtual channel that is closed already but for its fold."""
        folding = self._folding(ledger_id)
        if not folding:
            return None
        for vid in folding:
            self._retries.hurry(vid)
        waiting: Deferred[None] = Deferred()
        self._fold_waits.setdefault(ledger_id, []).append(waiting)
        return waiting

    def _holds_funds(self, vid: ChannelID, parent_id: ChannelID) -> bool:
        """Whether virtual channel `vid` may be funded by its parent: it is locked in the
        parent's latest fully signed state, or open for us. One still proposing, funding with
        no fully signed lock (its lock unsent, or of unknown fate because the intermediary
        stays away), or disputed through the other parent only, is at version 0 for us (we
        sign nothing else before it opens), so the parent may settle without it: if the
        intermediary did sign the lock, its refutation with the lock and version 0 pays each
        side the same."""
        channel = self._channels[vid]
        if channel.phase in TERMINAL:
            return False
        parent = self._channels.get(parent_id)
        if parent is not None and vid in self._locks(parent):
            return True
        return channel.phase in (Phase.OPEN, Phase.UPDATING, Phase.CLOSING)

    # -- opening --------------------------------------------------------------------------------

    async def propose(self, request: VirtualOpenRequest) -> Channel:
        """Propose a virtual channel; the channel once our lock is fully signed."""
        ours = tuple(row[0] for row in request.balances)
        theirs = tuple(row[1] for row in request.balances)
        ledger = find_ledger(self._channels.values(), request.intermediary, request.assets,
                             ours, theirs)
        if ledger is None:
            raise FailedPrecondition(
                "no open ledger channel with the intermediary covers this virtual channel: "
                "open one (or pay into one) first", via=_hex(request.intermediary))
        # Every check of the request first, so a bad one is not taken to the intermediary.
        make_virtual_proposal(request, participant=self._signer.address, ledger=ledger,
                              proposal_id=random_share(), nonce_share=random_share(),
                              deployment=self._deployment)
        fee = await self._quote(request)
        ledger = find_ledger(self._channels.values(), request.intermediary, request.assets,
                             tuple(map(sum, zip(ours, fee, strict=True))), theirs)
        if ledger is None:
            raise FailedPrecondition(
                "no open ledger channel with the intermediary covers this virtual channel and "
                "the intermediary's fee: pay into one first", via=_hex(request.intermediary),
                fee=self._amounts(request.assets, fee))
        proposal = make_virtual_proposal(request, participant=self._signer.address,
                                         ledger=ledger, proposal_id=random_share(),
                                         nonce_share=random_share(), deployment=self._deployment,
                                         fee=fee)
        message = VirtualPropose(
            proposal.proposal_id, proposal.chain_id, proposal.adjudicator,
            proposal.challenge_duration, proposal.nonce_share, proposal.assets,
            proposal.balances, proposal.participant, proposal.intermediary, proposal.parent)
        answer = await self._links.request(
            request.peer, message, self._timing.response_timeout + self._timing.request_timeout)
        if isinstance(answer, Reject):
            raise PeerRejected(f"the peer rejected the proposal: {answer.reason}",
                               peer=_hex(request.peer), reason=answer.reason)
        if not isinstance(answer, VirtualAccept):
            raise PeerProtocolError("unexpected answer to a virtual proposal",
                                    peer=_hex(request.peer))
        channel, events = complete_virtual_proposal(
            proposal, answer, sender=request.peer, peer=request.peer, signer=self._signer,
            deployment=self._deployment, confirm_updates=self._confirm)
        if channel is None:
            refused = next(e for e in events if isinstance(e, ev.ProposalRefused))
            self._execute(events)
            raise PeerProtocolError(f"the peer's acceptance is invalid: {refused.reason.value}",
                                    peer=_hex(request.peer), reason=refused.reason.value)
        self.track(channel)
        self._fees.offer(channel.channel_id, fee_field(fee))  # before the lock goes out
        return await self._start(channel, events)

    async def _quote(self, request: VirtualOpenRequest) -> tuple[int, ...]:
        """The intermediary's fee for `request`'s virtual channel (FailedPrecondition above
        the user's limit, which is 0 for every currency it does not name)."""
        assets = request.assets
        limit = fee_amounts(request.max_fee, len(assets))
        query = FeeQuery(random_share(), assets, tuple(r[0] + r[1] for r in request.balances))
        via = _hex(request.intermediary)
        answer = await self._links.request(request.intermediary, query,
                                           self._timing.request_timeout)
        if isinstance(answer, Reject):
            raise PeerRejected(f"the intermediary refuses: {answer.reason}", peer=via,
                               reason=answer.reason)
        if not isinstance(answer, FeeQuote) or len(answer.fee) != len(assets):
            raise PeerProtocolError("the intermediary's fee quote does not fit the query",
                                    peer=via)
        if not within(answer.fee, limit):
            raise FailedPrecondition(
                f"the intermediary charges a fee of {self._shown(assets, answer.fee)}, more "
                f"than maxFee allows ({self._shown(assets, limit)})", via=via,
                fee=self._amounts(assets, answer.fee), maxFee=self._amounts(assets, limit))
        return answer.fee

    def _amounts(self, assets: tuple[Address, ...], amounts: tuple[int, ...]) -> dict[str, str]:
        """Amounts by currency label, in the currency's unit (for errors)."""
        shown = {}
        for asset, amount in zip(assets, amounts, strict=True):
            label, decimals = self._asset_label(asset)
            shown[label] = format_amount(amount, decimals)
        return shown

    def _shown(self, assets: tuple[Address, ...], amounts: tuple[int, ...]) -> str:
        return ", ".join(f"{text} {label}" for label, text in self._amounts(assets, amounts)
                         .items())

    def proposal_received(self, peer: Address, msg: VirtualPropose) -> None:
        """A peer's virtual proposal: ask our user, or refuse it (the peer is told why)."""
        if self._questions.seen(msg.proposal_id):
            return
        ledger = self._ledger_for(msg)
        events = receive_virtual_proposal(
            msg, sender=peer, me=self._signer.address, peer_known=self._is_contact(peer),
            intermediary_known=self._is_contact(msg.intermediary),
            deployment=self._deployment, ledger=ledger)
        if any(isinstance(e, ev.ProposalReceived) for e in events):
            self._questions.ask_proposal(peer, msg)
        else:
            self._execute(events)

    def _ledger_for(self, msg: VirtualPropose) -> Channel | None:
        """Our ledger with the intermediary that covers a proposal made to us: our share on our
        side, the proposer's on the intermediary's."""
        return find_ledger(self._channels.values(), msg.intermediary, msg.assets,
                           tuple(row[1] for row in msg.balances),
                           tuple(row[0] for row in msg.balances))

    async def answer(self, pending: IncomingProposal, accept: bool) -> Channel | None:
        """Our user's answer to a waiting virtual proposal (taken from the questions)."""
        msg = pending.proposal
        assert isinstance(msg, VirtualPropose)
        if not accept:
            await self._links.send(pending.peer, Reject(msg.proposal_id, "rejected by the user"))
            return None
        ledger = self._ledger_for(msg)
        if ledger is None:
            self._links.send(pending.peer, Reject(
                msg.proposal_id, "no open ledger channel with the intermediary covers it any "
                "more")).addErrback(undelivered)
            raise FailedPrecondition("no open ledger channel with the intermediary covers this "
                                     "virtual channel any more", via=_hex(msg.intermediary))
        channel, events = accept_virtual_proposal(
            msg, signer=self._signer, ledger=ledger, nonce_share=random_share(),
            deployment=self._deployment, confirm_updates=self._confirm)
        self.track(channel)
        vid = channel.channel_id
        self._v0_waits.start(vid)
        return await self._start(channel, events)

    def _v0_expired(self, vid: ChannelID) -> None:
        """The proposer never countersigned version 0 (it crashed, or went silent): nothing
        is locked for the channel on our side, and we lock only a fully signed version 0, so
        it closes (docs/protocol.md: the proposal or v0 times out)."""
        channel = self._channels.get(vid)
        if channel is not None and channel.phase is Phase.PROPOSING:
            log.warn("virtual channel {vid}: the proposer did not countersign version 0 in "
                     "time; closing it", vid=_hex(vid))
            self._apply(vid, LockFailed("the proposer did not countersign version 0"))

    # -- locks and folds ------------------------------------------------------------------------

    def lock_parent(self, e: ev.LockParent) -> None:
        """Lock a virtual channel's version 0 in our ledger (`ev.LockParent`), paying the
        intermediary the fee we were quoted if we opened it."""
        self._v0_waits.signed(e.channel_id)  # we lock only a fully signed version 0
        self._through_parent(e.channel_id, e.parent,
                             replace(e.proof, fee=self._fees.offered(e.channel_id)))

    def fold_parent(self, e: ev.FoldParent) -> None:
        """Fold a virtual channel's final state into our ledger (`ev.FoldParent`)."""
        self._through_parent(e.channel_id, e.parent, e.proof)

    def _through_parent(self, vid: ChannelID, parent_id: ChannelID, proof: VirtualProof) -> None:
        parent = self._channels.get(parent_id)
        if parent is None:
            self._apply(vid, LockFailed("our ledger channel is gone"))
            return
        if proof.is_fold:
            self._folds_asked.add(vid)
        if vid in self._locking or self._retries.pausing(vid) or _pending_proof(parent, vid):
            # What is under way ends in `changed`; a lock or fold of unknown fate found at a
            # restart went out before it, so a sync without it ends the channel's funding.
            self._tried.add(vid)
            return
        if self._reconcile(vid, parent):
            return  # done already (a restart, a sync)
        self._tried.add(vid)
        self._send_proof(vid, parent_id, proof)

    def _send_proof(self, vid: ChannelID, parent_id: ChannelID, proof: VirtualProof) -> None:
        """Send our lock or fold of `vid` through the ledger's send queue."""
        self._locking.add(vid)
        sent = self._sends.send(parent_id, (), False, proof=proof)
        sent.addCallbacks(self._sent, self._not_sent, callbackArgs=(vid, parent_id),
                          errbackArgs=(vid, parent_id, proof))

    def _sent(self, _: Channel, vid: ChannelID, parent_id: ChannelID) -> None:
        self._locking.discard(vid)
        self._retries.forget(vid)
        parent = self._channels.get(parent_id)
        if parent is not None:
            self._reconcile(vid, parent)

    def _not_sent(self, failure: Failure, vid: ChannelID, parent_id: ChannelID,
                  proof: VirtualProof) -> None:
        self._locking.discard(vid)
        parent = self._channels.get(parent_id)
        channel = self._channels.get(vid)
        if parent is None or channel is None:
            return
        why = failure.getErrorMessage()
        if _pending_proof(parent, vid) and not proof.is_fold:
            # Its fate shows in the next sync with the intermediary (`changed`); the user
            # waiting for the channel is told now.
            self._not_open_yet(vid, PeerRequestTimedOut(
                f"the intermediary did not answer our lock ({why}): the virtual channel "
                "opens if it signed it, which the next sync with it shows",
                peer=_hex(parent.peer), timeout=0))
            return
        if proof.is_fold:
            if parent.phase in (Phase.OPEN, Phase.UPDATING) and vid in self._locks(parent) \
                    and self._retries.again(vid, parent_id, proof, failure.value):
                return
            self._retries.forget(vid)
            # Also when the fold's fate is still unknown: waiting on would wait forever for
            # an intermediary that stays away, and the ledger cannot close meanwhile. Our
            # latest ledger state still holds the lock, and the final state settles it; if the
            # intermediary did sign the fold, its folded state pays the same.
            if parent.phase in (Phase.FUNDING, Phase.OPEN, Phase.UPDATING) \
                    and vid in self._locks(parent):
                log.warn("virtual channel {vid}: the intermediary did not fold it ({why}); "
                         "settling our ledger {parent} on-chain with its final state",
                         vid=_hex(vid), why=why, parent=_hex(parent_id))
                self._apply(parent_id, ForceClose())
            return
        if channel.phase is Phase.FUNDING and vid not in self._locks(parent):
            log.warn("virtual channel {vid}: our lock was not signed ({why})", vid=_hex(vid),
                     why=why)
            if isinstance(failure.value, PerundError):
                self._lock_errors[vid] = failure.value
            self._apply(vid, LockFailed(why))

    def _fold_now(self, vid: ChannelID, parent_id: ChannelID, proof: VirtualProof) -> None:
        """Send a fold that failed again (`FoldRetries`), unless it is over: folded meanwhile
        (a Sync brought it), or the ledger went on-chain (`changed` follows either)."""
        parent = self._channels.get(parent_id)
        if parent is None or self._reconcile(vid, parent) \
                or parent.phase not in (Phase.OPEN, Phase.UPDATING) \
                or vid not in self._locks(parent):
            self._retries.forget(vid)
            return
        self._send_proof(vid, parent_id, proof)

    def _fold_unsigned(self, vid: ChannelID, parent: Channel) -> None:
        """Send the fold of closing virtual channel `vid` again once its parent shows that
        our earlier one is not signed and nothing of it is under way: a fold of unknown fate
        found at a restart (`_through_parent` left it to the intermediary's Sync) that the
        Sync shows she never got."""
        channel = self._channels[vid]
        if channel.phase is Phase.CLOSING and vid in self._folds_asked \
                and vid not in self._locking \
                and channel.current is not None and channel.current.state.is_final \
                and parent.phase in (Phase.OPEN, Phase.UPDATING) and not parent.needs_sync \
                and vid in self._locks(parent) and not self._retries.pausing(vid) \
                and not _pending_proof(parent, vid):
            log.info("virtual channel {vid}: the intermediary does not hold our fold; folding "
                     "again", vid=_hex(vid))
            self._send_proof(vid, parent.channel_id, proof_of(channel))

    @staticmethod
    def _locks(parent: Channel) -> Mapping[ChannelID, object]:
        return {} if parent.current is None else locks_of(parent.current.state)

    def _reconcile(self, vid: ChannelID, parent: Channel) -> bool:
        """Bring virtual channel `vid` in line with its parent's state: open once locked,
        closed once folded or once the parent is concluded. Whether nothing is left to do."""
        channel = self._channels.get(vid)
        if channel is None or channel.phase in TERMINAL:
            return True
        locked = vid in self._locks(parent)
        if parent.phase in TERMINAL:
            self._apply(vid, Concluded(channel.version))
            return True
        if channel.phase is Phase.FUNDING:
            if locked:
                self._apply(vid, Funded())
                return True
            if vid in self._tried and vid not in self._locking \
                    and not _pending_proof(parent, vid):
                self._apply(vid, LockFailed("the intermediary did not sign our lock"))
                return True
            return False
        final = channel.current is not None and channel.current.state.is_final
        if channel.phase is Phase.CLOSING and final and not locked \
                and parent.phase not in SETTLING and parent.current is not None:
            self._apply(vid, Concluded(channel.version))  # folded off-chain
            return True
        return channel.phase is not Phase.CLOSING

    def changed(self, before: Channel, after: Channel) -> None:
        """After every transition of one of our channels: a ledger's virtual channels follow
        it; a virtual channel registered on-chain takes its ledger on-chain."""
        if after.channel_id in self._fold_waits and not self._folding(after.channel_id):
            for waiting in self._fold_waits.pop(after.channel_id):
                waiting.callback(None)
        children = self._children.get(after.channel_id)
        if children:
            for vid in list(children):
                if not self._reconcile(vid, after):
                    self._fold_unsigned(vid, after)
                if self._channels[vid].phase in TERMINAL:
                    children.discard(vid)
                    self._folds_asked.discard(vid)
            if after.phase in TERMINAL:
                self._children.pop(after.channel_id, None)
        if is_virtual(after) and before.phase is Phase.FUNDING \
                and after.phase is not Phase.FUNDING:
            # Our lock is signed (the fee moved with it) or can no longer be.
            fee = self._fees.settled(after.channel_id)
            if after.phase is Phase.OPEN:
                self._fees.record(parent_of(after), after.latest.assets, fee, earned=False)
        if is_virtual(after) and after.phase is Phase.DISPUTED \
                and before.phase is not Phase.DISPUTED:
            self.disputes.registered(after.channel_id)
            parent = self._channels.get(parent_of(after))
            if parent is not None and parent.phase in (Phase.FUNDING, Phase.OPEN,
                                                       Phase.UPDATING) \
                    and after.channel_id in self._locks(parent):
                log.warn("virtual channel {vid} is registered on-chain: settling its ledger "
                         "{parent} on-chain too", vid=_hex(after.channel_id),
                         parent=_hex(parent.channel_id))
                self._apply(parent.channel_id, ForceClose())
