"""Sending transactions: one account's go out one at a time, nonces tracked locally and held
against the chain's.

The reactor-side half of a transaction's life: take the account's lock, preflight it and read
the chain's nonce for the account (one batch, in the pool), pick the nonce and sign, send (in
the pool), then poll for the receipt from the reactor with `deferLater` so that no pool thread
ever sleeps waiting for a block. The lock is held until the receipt arrives: the next
transaction of the same account is then preflighted on the state this one produced (a register
after a deposit, say), and its nonce cannot race.

A reorganisation may drop a mined transaction of ours for good, too shallow for the watcher to
see. The chain's nonce for the account is then below ours: before a send the next nonce drops
back to it, and a transaction already sent behind such a gap gets it filled (`gap_repair`).
One dropped so before its receipt was read, with no gap before it, is sent again as it was
signed as soon as a look at the chain's nonce finds its nonce free and the transaction unknown.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from perund.chain.account import Account
from perund.chain.client import ChainClient
from perund.chain.results import TxReceipt
from perund.chain.transactions import PreparedTx, RawReceipt
from perund.channel.types import Address, hex_address
from perund.errors import PerundError, ProtocolError, TxTimedOut
from perund.words import GWEI_DECIMALS, plural, seconds_text, units_text

DEFAULT_REPLACEMENTS = 2
"""Replacements of a transaction not mined in time: at most three `tx_timeout`s in all, within
the margin of the shortest challenge duration the node accepts (three times its reaction
time)."""

NONCE_CHECK_INTERVAL = 2.0
"""Seconds between two looks at the chain's nonce while a transaction waits for its block (the
first at its second empty receipt poll): a transaction stuck behind a gap is noticed within
seconds, and a wait on a chain with 12 s blocks costs a few extra calls, not one per poll."""

PLAIN_TRANSFER_GAS = 21_000
"""The gas of a transfer to an account without code: a gap filler (`gap_filler`)."""

GAP_FILLER = "gapFiller"
"""The `tx_type` of a gap filler's receipt (`TxReceipt.fillers`)."""

RunInPool = Callable[..., Deferred[Any]]
"""`run(f, *args)`: call blocking `f(*args)` in the chain pool, a Deferred of its result."""


@dataclass(slots=True)
class _AccountSlot:
    lock: DeferredLock
    next_nonce: int | None = None
    """The nonce the next transaction uses; None means ask the node (at start, after errors)."""
    in_flight: bytes | None = None
    """The hash of the sent transaction whose receipt is awaited, if any."""
    mined_block: int = -1
    """The block of the latest receipt of ours: a nonce read as of an older head is from a
    node behind it (a load balancer's), and does not yet count that transaction."""


def chosen_nonce(local: int | None, pending: int, head: int, mined_block: int) -> int:
    """The nonce of an account's next transaction: ours (`local`), or the chain's `pending`
    one as read at block `head`, when our latest receipt came from block `mined_block`.

    The chain's when we have none, and when it is higher (another sender with the same key:
    ours would be refused as "nonce too low"). When it is lower, transactions of ours that
    were mined are gone (a reorganisation dropped them): it is the chain's too, as long as its
    head is not behind our latest receipt. With the account's lock held nothing of ours is in
    flight, and a transaction that timed out has had its nonce forgotten already, so a nonce
    the chain does not count belongs to no transaction that can still be mined.
    """
    if local is None or pending >= local or head >= mined_block:
        return pending
    return local


def gap_repair(pending: int, nonce: int, known: bool) -> tuple[range, bool]:
    """For a sent transaction with `nonce` that is not mined yet, given the chain's `pending`
    nonce for its account and whether the chain `known`s it: the nonces to fill, and whether
    to send it again.

    A `pending` below its nonce is a gap (transactions of ours before it vanished): it waits
    behind it for ever. Filling the gap, not signing it again with a lower nonce, is what is
    safe: it may still be in a pool (here queued, or at another node of a hosted endpoint), and
    a second copy at the lower nonce would let both be mined, a deposit twice. If the chain no
    longer knows it either, it went with them, and is sent again as it was signed (one signed
    transaction is mined at most once).

    A `pending` equal to its nonce with the chain not knowing it: it was mined and a
    reorganisation dropped it before its receipt was read (or a pool dropped it). It is sent
    again as it was signed, now: the replacement with higher fees comes only after
    `tx_timeout`, too late for a refutation. Sending the same signed bytes again is safe
    whatever dropped it; a pool that dropped it for its fees refuses it again, and the
    replacement follows as before. A `pending` above its nonce means that nonce is taken
    (mined with its receipt not yet served, or a vanished transaction came back): the polls
    and the timeout decide.
    """
    if pending > nonce:
        return range(0), False
    return range(pending, nonce), not known


def gap_filler(account: Account, like: PreparedTx, nonce: int) -> PreparedTx:
    """A transfer of nothing from `account` to itself with `nonce` at `like`'s fees: what takes
    the place of a vanished transaction before `like`."""
    fees = like.transaction
    assert fees is not None, "only a prepared transaction has fees to copy"
    transaction = replace(fees, nonce=nonce, gas=PLAIN_TRANSFER_GAS, to=account.address,
                          value=0, data=b"")
    raw, tx_hash = account.sign_transaction(transaction)
    return PreparedTx(raw=raw, tx_hash=tx_hash, nonce=nonce, gas_limit=transaction.gas,
                      transaction=transaction)


@dataclass(slots=True)
class _Waiting:
    """A sent transaction waiting for its block, and what its gap repairs did."""

    account: Account
    tx_type: str
    latest: PreparedTx
    """The last of its versions (replacements have higher fees) that the node took."""
    filled: set[int] = field(default_factory=set)
    fillers: dict[bytes, int] = field(default_factory=dict)
    """Every gap filler sent for it (hash → nonce; a replacement's fees sign new ones): the
    account pays the gas of those mined, which is counted with its receipt."""
    resent: bool = False


class TransactionSender:
    """Sends transactions for any number of accounts, serialized per account."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        run: RunInPool,
        client: ChainClient,
        chain_id: int,
        *,
        tx_timeout: float,
        poll_interval: float,
        replacements: int = DEFAULT_REPLACEMENTS,
    ) -> None:
        self._reactor = reactor
        self._run = run
        self._client = client
        self._chain_id = chain_id
        self.tx_timeout = tx_timeout
        self.poll_interval = poll_interval
        self.replacements = replacements
        """How many times a transaction not mined within `tx_timeout` is sent again with
        higher fees before TxTimedOut."""
        self.nonce_check_interval = NONCE_CHECK_INTERVAL
        self._slots: dict[Address, _AccountSlot] = {}

    def _now(self) -> float:
        # zope interfaces do not type-check as protocols: IReactorTime.seconds has no `self`.
        return float(cast(Any, self._reactor).seconds())

    def _slot(self, address: Address) -> _AccountSlot:
        slot = self._slots.get(address)
        if slot is None:
            slot = self._slots[address] = _AccountSlot(DeferredLock())
        return slot

    async def transact(
        self,
        account: Account,
        tx_type: str,
        to: Address | None,
        data: bytes,
        value: int = 0,
        *,
        events_of: Address | None = None,
    ) -> TxReceipt:
        """Send one transaction and wait until it is mined; its receipt summary.

        Raises TxReverted (at preflight, or mined with status 0), TxTimedOut (not mined within
        `tx_timeout`, also when its receipt could not be read meanwhile), ChainNotReachable.
        `events_of` is the contract whose logs are decoded.
        """
        slot = self._slot(account.address)
        await slot.lock.acquire()
        try:
            return await self._transact_locked(slot, account, tx_type, to, data, value, events_of)
        finally:
            slot.lock.release()

    async def _transact_locked(
        self,
        slot: _AccountSlot,
        account: Account,
        tx_type: str,
        to: Address | None,
        data: bytes,
        value: int,
        events_of: Address | None,
    ) -> TxReceipt:
        client = self._client
        sender = hex_address(account.address)
        try:
            preflight = await self._run(client.preflight_blocking, account, tx_type, to, data,
                                        value)
            local = slot.next_nonce
            nonce = chosen_nonce(local, preflight.pending_nonce, preflight.head,
                                 slot.mined_block)
            if local is not None and nonce < local:
                self.log.warn(
                    "the chain no longer counts {vanished} of {sender} (nonce {first} to "
                    "{last}: a reorganisation dropped them?); the {tx_type} takes nonce {nonce}",
                    vanished=plural(local - nonce, "transaction"), sender=sender, first=nonce,
                    last=local - 1, tx_type=tx_type, nonce=nonce)
            prepared = client.sign(account, to, data, value, preflight, nonce, self._chain_id)
            await self._run(client.send_raw_blocking, tx_type, prepared.raw)
        except BaseException:
            # Whether the node took the transaction is unknown (a reply may have been lost):
            # ask it for the nonce again next time rather than guess.
            slot.next_nonce = None
            raise
        slot.next_nonce = prepared.nonce + 1
        slot.in_flight = prepared.tx_hash
        tx_hex = "0x" + prepared.tx_hash.hex()
        self.log.debug("sent {tx_type} {tx_hash} from {sender} nonce {nonce}",
                       tx_type=tx_type, tx_hash=tx_hex, sender=sender, nonce=prepared.nonce)
        waiting = _Waiting(account, tx_type, prepared)
        try:
            receipt = await self._mined_or_replaced(slot, waiting)
        except BaseException:
            slot.next_nonce = None
            raise
        finally:
            slot.in_flight = None
        slot.mined_block = receipt.block_number
        # The one mined: after a replacement, not the hash first sent.
        tx_hex = "0x" + receipt.tx_hash.hex()
        if receipt.status != 1:
            reverted = await self._run(
                client.explain_revert_blocking,
                account, tx_type, to, data, value, receipt.block_number, receipt.tx_hash,
            )
            self.log.warn(
                "{tx_type} {tx_hash} reverted in block {block}: {error}",
                tx_type=tx_type, tx_hash=tx_hex, block=receipt.block_number,
                error=reverted.data.get("error"),
            )
            raise reverted
        self.log.info(
            "{tx_type} {tx_hash} mined in block {block}, gas {gas}",
            tx_type=tx_type, tx_hash=tx_hex, block=receipt.block_number, gas=receipt.gas_used,
        )
        summary = client.summarize(tx_type, receipt, events_of)
        if not waiting.fillers:
            return summary
        return replace(summary, fillers=await self._mined_fillers(waiting))

    async def _mined_fillers(self, waiting: _Waiting) -> tuple[TxReceipt, ...]:
        """The receipts of `waiting`'s gap fillers that were mined, in nonce order. Each filler
        nonce is below the transaction's, so whichever of its versions was mined is in a block
        no later than the transaction's: its receipt is there to read now. None of them may
        be (the vanished transaction came back and took the nonce)."""
        mined = []
        for filler, nonce in sorted(waiting.fillers.items(), key=lambda item: item[1]):
            try:
                receipt = await self._run(self._client.receipt_blocking, filler)
            except ProtocolError as exc:
                # The transaction it let through is mined: a failed read of a filler's receipt
                # must not fail it; only the fees counted are short (and the log says so).
                self.log.warn("{tx_type}: reading the receipt of gap filler 0x{filler} (nonce "
                              "{nonce}) failed ({why}); its gas is not counted",
                              tx_type=waiting.tx_type, filler=filler.hex(), nonce=nonce,
                              why=exc)
                continue
            if receipt is not None:
                mined.append(self._client.summarize(GAP_FILLER, receipt, None))
        return tuple(mined)

    async def await_earlier(self, address: Address) -> None:
        """Wait until every transaction of `address` that the chain holds unmined is mined.

        Called before deciding whether a transaction is needed (is our deposit on-chain yet?)
        by reading the chain: a transaction sent before a restart, or one whose receipt timed
        out, may still be in the pool, and reads at "latest" do not show it. With the account's
        lock held no transaction of this process is in flight, so any such one is earlier.
        Raises TxTimedOut when they are not mined within `tx_timeout`.
        """
        slot = self._slot(address)
        await slot.lock.acquire()
        try:
            deadline = self._now() + self.tx_timeout
            told = False
            while True:
                mined = await self._run(self._client.mined_nonce_blocking, address)
                pending = await self._run(self._client.pending_nonce_blocking, address)
                if pending <= mined:
                    return
                remaining = deadline - self._now()
                if remaining <= 0:
                    # The next transaction asks for the nonce again: it may replace these.
                    slot.next_nonce = None
                    count = pending - mined
                    raise TxTimedOut(
                        f"{plural(count, 'earlier transaction')} of {hex_address(address)} "
                        f"(nonce {mined} on) {'was' if count == 1 else 'were'} not mined "
                        f"within {seconds_text(self.tx_timeout)}", sender=hex_address(address),
                        nonce=mined, timeout=self.tx_timeout)
                if not told:
                    told = True
                    self.log.info(
                        "waiting for {earlier} of {sender} to be mined "
                        "(nonce {nonce} on)", count=pending - mined,
                        earlier=plural(pending - mined, "earlier transaction"),
                        sender=hex_address(address), nonce=mined)
                await deferLater(self._reactor, min(self.poll_interval, remaining), lambda: None)
        finally:
            slot.lock.release()

    async def _mined_or_replaced(self, slot: _AccountSlot, waiting: _Waiting) -> RawReceipt:
        """The receipt of `waiting`'s transaction or of one of its replacements. A transaction
        not mined within `tx_timeout` is sent again with the same nonce and higher fees, up to
        `replacements` times: only one of them can be mined. A fee spike would otherwise leave
        it, and every later transaction of the account (a refutation among them), waiting
        behind it for as long as the spike lasts. Meanwhile a gap before it is filled, and a
        version the chain dropped is sent again (`_repair`)."""
        account, tx_type, prepared = waiting.account, waiting.tx_type, waiting.latest
        sent = [prepared.tx_hash]
        current = prepared
        for attempt in range(self.replacements + 1):
            try:
                return await self._wait_mined(tx_type, sent, lambda: self._repair(waiting))
            except TxTimedOut:
                if attempt == self.replacements or current.transaction is None:
                    raise
            try:
                current = await self._run(self._client.replacement_blocking, account, current)
                await self._run(self._client.send_raw_blocking, tx_type, current.raw)
            except PerundError as exc:
                # One of them was mined meanwhile ("nonce too low"), the node has this one, or
                # cannot be reached: the receipts already sent are polled again.
                self.log.warn("{tx_type} 0x{tx_hash}: not mined within {timeout:g} s, and its "
                              "replacement was not taken ({why}); waiting for it again",
                              tx_type=tx_type, tx_hash=sent[-1].hex(), timeout=self.tx_timeout,
                              why=exc)
                continue
            sent.append(current.tx_hash)
            slot.in_flight = current.tx_hash
            waiting.latest = current
            fees = current.transaction
            assert fees is not None
            self.log.warn(
                "{tx_type} 0x{old}: not mined within {timeout:g} s; sent again with higher fees "
                "as 0x{new} (nonce {nonce}, up to {cap} gwei a gas)", tx_type=tx_type,
                old=sent[-2].hex(), new=current.tx_hash.hex(), timeout=self.tx_timeout,
                nonce=current.nonce, fee_cap=fees.max_fee_per_gas,
                cap=units_text(fees.max_fee_per_gas, GWEI_DECIMALS))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _repair(self, waiting: _Waiting) -> None:
        """Look at the chain's nonce and at whether it knows `waiting`'s latest version; fill a
        gap before it, and send it again if it is gone (`gap_repair`)."""
        account, latest = waiting.account, waiting.latest
        sender, tx_hex = hex_address(account.address), "0x" + latest.tx_hash.hex()
        pending, known = await self._run(self._client.pool_view_blocking, account.address,
                                         latest.tx_hash)
        fill, resend = gap_repair(pending, latest.nonce, known)
        if fill and not waiting.filled.issuperset(fill):
            self.log.warn(
                "{tx_type} {tx_hash} (nonce {nonce}) waits behind a gap: the chain's next nonce "
                "for {sender} is {pending} (transactions of ours vanished: a reorganisation?); "
                "filling nonce {pending} to {last} with transfers of nothing to itself",
                tx_type=waiting.tx_type, tx_hash=tx_hex, nonce=latest.nonce, sender=sender,
                pending=pending, last=latest.nonce - 1)
        # Signed anew each time: after a replacement the fillers carry its higher fees too.
        for nonce in fill:
            filler = gap_filler(account, latest, nonce)
            waiting.fillers[filler.tx_hash] = nonce
            await self._send_again(waiting.tx_type, filler.raw)
        waiting.filled.update(fill)
        if resend:
            if not waiting.resent:
                waiting.resent = True
                if fill:
                    self.log.warn("{tx_type} {tx_hash} (nonce {nonce}) went with the "
                                  "transactions before it; sending it again",
                                  tx_type=waiting.tx_type, tx_hash=tx_hex, nonce=latest.nonce)
                else:
                    self.log.warn("{tx_type} {tx_hash} (nonce {nonce}) is unknown to the chain "
                                  "and its nonce is free again (mined, then dropped by a "
                                  "reorganisation?); sending it again as it was signed",
                                  tx_type=waiting.tx_type, tx_hash=tx_hex, nonce=latest.nonce)
            await self._send_again(waiting.tx_type, latest.raw)

    async def _send_again(self, tx_type: str, raw: bytes) -> None:
        try:
            await self._run(self._client.send_raw_blocking, tx_type, raw)
        except PerundError as exc:
            # Most often harmless: the node has it already, or its nonce was taken meanwhile
            # (mined, or the vanished transaction came back). The next look tries again.
            self.log.debug("sending {tx_type} again was refused: {why}", tx_type=tx_type,
                           why=exc)

    async def _wait_mined(self, tx_type: str, sent: list[bytes],
                          repair: Callable[[], Awaitable[None]]) -> RawReceipt:
        """The receipt of whichever of `sent` (one nonce's transactions) is mined, within
        `tx_timeout`; TxTimedOut naming the last. `repair` runs at the second empty receipt
        poll, then every `nonce_check_interval`: a transaction mined at once costs no more
        calls."""
        tx_hash = sent[-1]
        deadline = self._now() + self.tx_timeout
        unreachable: ProtocolError | None = None
        empty_polls = 0
        next_repair = 0.0
        while True:
            try:
                receipt: RawReceipt | None = None
                for candidate in reversed(sent):
                    receipt = await self._run(self._client.receipt_blocking, candidate)
                    if receipt is not None:
                        break
            except ProtocolError as exc:
                # The transaction is out: a poll that failed (the chain unreachable, or
                # answering with an error or a reply cut short) says nothing of it, and it may
                # be mined meanwhile. Giving up here would report a deposit as failed that
                # lands.
                if unreachable is None:
                    self.log.warn("{tx_type} {tx_hash}: reading its receipt failed ({why}); "
                                  "trying again until {timeout:g} s after it was sent",
                                  tx_type=tx_type, tx_hash="0x" + tx_hash.hex(), why=exc,
                                  timeout=self.tx_timeout)
                unreachable, receipt = exc, None
            else:
                if receipt is not None:
                    return receipt
                empty_polls += 1
                if empty_polls >= 2 and self._now() >= next_repair:
                    next_repair = self._now() + self.nonce_check_interval
                    try:
                        await repair()
                    except ProtocolError as exc:
                        # The receipt polls report a chain that fails; the next look retries.
                        self.log.debug("{tx_type} {tx_hash}: looking at its nonce failed: "
                                       "{why}", tx_type=tx_type, tx_hash="0x" + tx_hash.hex(),
                                       why=exc)
            remaining = deadline - self._now()
            if remaining <= 0:
                also = "" if unreachable is None else \
                    f" (reading its receipt failed meanwhile: {unreachable.message})"
                raise TxTimedOut(
                    f"the {tx_type} transaction 0x{tx_hash.hex()} was not mined within "
                    f"{seconds_text(self.tx_timeout)}{also}",
                    txType=tx_type,
                    txHash="0x" + tx_hash.hex(),
                    timeout=self.tx_timeout,
                )
            await deferLater(self._reactor, min(self.poll_interval, remaining), lambda: None)

    def in_flight(self, address: Address) -> bytes | None:
        """The hash of `address`'s sent transaction still waiting to be mined, if any."""
        slot = self._slots.get(address)
        return None if slot is None else slot.in_flight

    def forget_nonces(self) -> None:
        """Re-read every account's nonce from the node before its next transaction."""
        for slot in self._slots.values():
            slot.next_nonce = None
