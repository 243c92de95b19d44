"""The intermediary's side of virtual channels: matching locks and folds, and what it keeps of
each virtual channel it funds (docs/protocol.md "Virtual channels").

Rules, stated once:

- a session serves as intermediary only when its config says so (`intermediary.enabled`);
  otherwise every lock and fold is refused, unsigned;
- a lock or fold is taken only on a ledger of ours with the sender, for a virtual channel whose
  ID is its params' on our deployment and whose other parent is our ledger with the other
  party; the core then checks it exactly and holds it (`AwaitingMatch`);
- ingrid answers locks and folds **in pairs only**: when the matching update of the other
  ledger (same params, same virtual state) is held too, her record of the virtual channel is
  written and both updates are countersigned in the same reactor turn, so that both are
  durable before either answer leaves (group commit); one that finds no match within the lock
  window is refused (`MatchFailed`): she never signed it, so nothing is at stake;
- she may charge the opener a fee (`schedule`, docs/protocol.md "Intermediary fees"): she
  quotes it on request (`FeeQuery` → `FeeQuote`), refuses a lock of the opener that pays less
  (naming her fee) or a lock of the responder that pays anything, and records what she earned
  once she countersigned the pair;
- she watches every virtual channel she funds: once one is registered on-chain she records the
  registration and settles both her ledgers with it on-chain (each pays her the outcome of the
  virtual participant she stands for there, so she ends where she started).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.logger import Logger

from perund.chain.results import ChainEvent
from perund.channel import events as ev
from perund.channel.changes import Change, ForceClose, MatchFailed, RespondUpdate, UpdateReceived
from perund.channel.encoding import Signer, virtual_channel_id
from perund.channel.fees import FeeSchedule, fee_amounts, fee_for, within
from perund.channel.phases import Phase
from perund.channel.proposal import Deployment, challenge_duration_problem
from perund.channel.records import Channel
from perund.channel.types import Address, ChannelID, State, VirtualProof
from perund.channel.virtual import is_virtual
from perund.peer.manager import undelivered
from perund.session.chain_check import AssetLabel, default_label
from perund.session.fees import FeeBook
from perund.session.ports import PeerLinks
from perund.session.virtual_disputes import Registration
from perund.storage import ChannelStore
from perund.storage.virtual_records import (
    PREFIX,
    VirtualRecord,
    decode_record,
    encode_record,
    record_name,
)
from perund.wire.fields import MAX_REASON_LENGTH
from perund.wire.messages import (
    FeeQuery,
    FeeQuote,
    Reject,
    UpdateReject,
    VirtualFold,
    VirtualLock,
)
from perund.words import asset_text

log = Logger(namespace="perund.intermediary")

UNWILLING = "this node does not serve as intermediary"


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


@dataclass(slots=True)
class _Held:
    """A lock or fold held for its match."""

    channel_id: ChannelID
    update_id: bytes
    proof: VirtualProof
    timer: DelayedCall


class Intermediary:
    """Ingrid's matcher and records (module doc). `apply(channel_id, change)` feeds a core;
    `registered(vid)` tells the client's virtual parts that a registration is known."""

    def __init__(self, reactor: Any, *, enabled: bool, window: float, signer: Signer,
                 links: PeerLinks, channels: Mapping[ChannelID, Channel], store: ChannelStore,
                 apply: Callable[[ChannelID, Change], None],
                 deployment: Deployment,
                 registered: Callable[[ChannelID], None],
                 schedule: FeeSchedule | None = None, fees: FeeBook | None = None,
                 asset_label: AssetLabel = default_label) -> None:
        self._reactor = reactor
        self.asset_label = asset_label
        """Names assets in the reasons a party reads (the node's currency table)."""
        self.enabled = enabled
        self.window = window
        self.schedule: FeeSchedule = dict(schedule or {})
        """Our fee terms per asset (empty: we charge nothing)."""
        self._fees = fees or FeeBook(store)
        self._signer = signer
        self._links = links
        self._channels = channels
        self._store = store
        self._apply = apply
        self._deployment = deployment
        self._registered = registered
        self._held: dict[tuple[ChannelID, bool], dict[ChannelID, _Held]] = {}
        """Locks (False) and folds (True) held per virtual channel, by ledger."""
        self.records: dict[ChannelID, VirtualRecord] = {}
        for name, value in store.metas(PREFIX).items():
            vid = ChannelID(bytes.fromhex(name[len(PREFIX):]))
            self.records[vid] = decode_record(value, vid)

    # -- what the client asks -----------------------------------------------------------------

    def proof(self, vid: ChannelID) -> VirtualProof | None:
        """The latest state of virtual channel `vid` we hold, if we fund it."""
        record = self.records.get(vid)
        return None if record is None else record.proof

    def registration(self, vid: ChannelID) -> Registration | None:
        """Virtual channel `vid`'s registration on-chain, if we fund it and it is registered."""
        record = self.records.get(vid)
        return None if record is None else record.registration

    def forget(self, vid: ChannelID) -> None:
        """Drop the record of virtual channel `vid` (both its parents retire: nothing of it
        is left to settle; perund.session.retirement)."""
        if self.records.pop(vid, None) is not None:
            self._store.delete_meta(record_name(vid))

    def holds(self, update_id: bytes) -> bool:
        """Whether `update_id` is a lock or fold held for its match (not a user's question)."""
        return any(item.update_id == update_id
                   for held in self._held.values() for item in held.values())

    def stop(self) -> None:
        """Cancel the windows: what is held is rejected by the core at the next start."""
        for held in self._held.values():
            for item in held.values():
                if item.timer.active():
                    item.timer.cancel()
        self._held.clear()

    # -- locks and folds ------------------------------------------------------------------------

    def received(self, peer: Address, msg: VirtualLock | VirtualFold) -> Change | None:
        """The core input a peer's lock or fold stands for, or None when it is refused here
        (answered with UpdateReject; it was never signed)."""
        state, proof = msg.state, msg.proof
        why = self._refusal(peer, state.channel_id, proof)
        if why is None:
            return UpdateReceived(peer, state, msg.signature, self._signer, proof)
        if self._links.refused(peer):
            log.warn("refused a virtual-channel update from {peer} on channel {channel_id}: "
                     "{why}", peer=_hex(peer), channel_id=_hex(state.channel_id), why=why)
        self._links.send(peer, UpdateReject(state.channel_id, state.version, why)
                         ).addErrback(undelivered)
        return None

    def quote(self, peer: Address, msg: FeeQuery) -> None:
        """Answer a prospective opener's `FeeQuery` with our fee for such a virtual channel."""
        answer: FeeQuote | Reject
        if self.enabled:
            answer = FeeQuote(msg.query_id, fee_for(self.schedule, msg.assets, msg.totals))
        else:
            answer = Reject(msg.query_id, UNWILLING)
        self._links.send(peer, answer).addErrback(undelivered)

    def _fee_refusal(self, proof: VirtualProof, j: int) -> str | None:
        """Why the fee of a lock from virtual participant `j` is refused, if it is."""
        if proof.is_fold or (j != 0 and not proof.fee):
            return None
        if j != 0:
            return "only the virtual channel's opener pays the intermediary a fee"
        assets = proof.state.assets
        required = fee_for(self.schedule, assets, proof.state.totals())
        if within(required, fee_amounts(proof.fee, len(assets))):
            return None
        # In the currency's unit, as the opener's user named the most it pays (maxFee).
        charged = ", ".join(asset_text(amount, *self.asset_label(asset))
                            for asset, amount in zip(assets, required, strict=True) if amount)
        return f"fee too low: the intermediary charges {charged}"[:MAX_REASON_LENGTH]

    def _refusal(self, peer: Address, ledger_id: ChannelID, proof: VirtualProof) -> str | None:
        if not self.enabled:
            return UNWILLING
        d = self._deployment
        vp = proof.params
        if virtual_channel_id(d.chain_id, d.adjudicator, vp) != proof.state.channel_id:
            return "the virtual channel's ID is not its params' on our deployment"
        # A dispute of the virtual channel keeps our funds in both ledgers this long: the
        # same bounds as for a channel of our own, said in the same words.
        duration = None if proof.is_fold else challenge_duration_problem(vp.challenge_duration, d)
        if duration is not None:
            return f"the virtual channel's challenge duration is {duration}"
        if peer not in vp.participants:
            return "the sender is no party of the virtual channel"
        j = vp.participants.index(peer)
        assets = []
        for parent, party in ((vp.parents[j], peer), (vp.parents[1 - j], vp.participants[1 - j])):
            ledger = self._channels.get(parent)
            if ledger is None or is_virtual(ledger) or ledger.peer != party:
                return "the virtual channel's parents are not our ledgers with its parties"
            assets.append(set(ledger.latest.assets))
        if not proof.is_fold and assets[0] != assets[1]:
            # The contract fits a registered virtual state to the parent it comes through: an
            # asset only one parent holds, listed at 0 by a later virtual state the two parties
            # sign, fits that parent and never the other, whose lock could then never be
            # concluded (nor its state without the lock refuted). With the same assets in
            # both, a state fits both parents or neither.
            return "the virtual channel's parent ledgers hold different assets"
        if vp.parents[j] != ledger_id:
            return "the virtual channel is not funded through this ledger"
        if proof.fee and len(proof.fee) != len(proof.state.assets):
            return "the fee does not hold one amount per asset of the virtual channel"
        return self._fee_refusal(proof, j)

    def awaiting(self, e: ev.AwaitingMatch) -> None:
        """The core holds a valid lock or fold: answer it with its match, or wait for it."""
        key = (e.proof.state.channel_id, e.proof.is_fold)
        held = self._held.setdefault(key, {})
        previous = held.pop(e.channel_id, None)
        if previous is not None and previous.timer.active():
            previous.timer.cancel()
        for ledger_id, other in list(held.items()):
            if not self._still_held(other):
                held.pop(ledger_id)
                if other.timer.active():
                    other.timer.cancel()
                continue
            if (other.proof.params, other.proof.state) == (e.proof.params, e.proof.state):
                held.pop(ledger_id)
                if other.timer.active():
                    other.timer.cancel()
                self._answer_pair(e.channel_id, e.update_id, other, e.proof)
                if not held:
                    self._held.pop(key, None)
                return
        timer = self._reactor.callLater(self.window, self._expired, key, e.channel_id)
        held[e.channel_id] = _Held(e.channel_id, e.update_id, e.proof, timer)

    def _still_held(self, item: _Held) -> bool:
        channel = self._channels.get(item.channel_id)
        if channel is None or channel.staged is None:
            return False
        return channel.staged.update_id == item.update_id \
            and channel.staged.proposer != channel.index

    def _answer_pair(self, ledger_id: ChannelID, update_id: bytes, other: _Held,
                     proof: VirtualProof) -> None:
        vid = proof.state.channel_id
        if proof.is_fold:
            # Both ledgers fold it now: nothing of it is left to dispute.
            self.records.pop(vid, None)
            self._store.delete_meta(record_name(vid))
        else:
            record = VirtualRecord(proof)
            self.records[vid] = record
            self._store.set_meta(record_name(vid), encode_record(record))
            # The opener's lock carries the fee; we earn it in the opener's ledger as we sign.
            opener = proof.params.parents[0]
            paid = other.proof if other.channel_id == opener else proof
            self._fees.record(opener, proof.state.assets, paid.fee, earned=True)
        log.info("virtual channel {vid}: both {what} match; countersigning both",
                 vid=_hex(vid), what="folds" if proof.is_fold else "locks")
        # One reactor turn: both records are durable before either answer leaves.
        self._apply(other.channel_id, RespondUpdate(self._signer, other.update_id, True))
        self._apply(ledger_id, RespondUpdate(self._signer, update_id, True))

    def _expired(self, key: tuple[ChannelID, bool], ledger_id: ChannelID) -> None:
        held = self._held.get(key, {})
        item = held.pop(ledger_id, None)
        if not held:
            self._held.pop(key, None)
        if item is not None and ledger_id in self._channels:
            log.info("virtual channel {vid}: no matching {what} came within {window} s; "
                     "refusing the one on channel {channel_id}", vid=_hex(key[0]),
                     what="fold" if key[1] else "lock", window=self.window,
                     channel_id=_hex(ledger_id))
            self._apply(ledger_id, MatchFailed(item.update_id))

    # -- the chain ----------------------------------------------------------------------------

    def chain_event(self, event: ChainEvent, same_tx: tuple[ChainEvent, ...]) -> None:
        """The watcher's news of every event: a registration of a virtual channel we fund is
        recorded, and both our ledgers settle with it."""
        if event.name != "Registered" or event.channel_id is None:
            return
        vid = ChannelID(event.channel_id)
        record = self.records.get(vid)
        if record is None:
            return
        args = event.args
        version = int(args["version"])
        if record.registration is not None and record.registration[0].version >= version:
            return
        balances = tuple(tuple(int(b) for b in row) for row in args["balances"])
        state = State(vid, version, record.proof.state.assets, balances, bool(args["isFinal"]))
        updated = VirtualRecord(record.proof, (state, int(args["timeout"])))
        self.records[vid] = updated
        self._store.set_meta(record_name(vid), encode_record(updated))
        log.warn("virtual channel {vid} is registered on-chain at version {version}: settling "
                 "both our ledgers that fund it", vid=_hex(vid), version=version)
        for parent in record.proof.params.parents:
            ledger = self._channels.get(parent)
            if ledger is not None and ledger.phase in (Phase.FUNDING, Phase.OPEN,
                                                       Phase.UPDATING):
                self._apply(parent, ForceClose())
        self._registered(vid)
