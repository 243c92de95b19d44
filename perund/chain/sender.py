"""Sending transactions: one account's go out one at a time, nonces tracked locally.

The reactor-side half of a transaction's life: take the account's lock, pick the nonce,
preflight and sign (in the pool), send (in the pool), then poll for the receipt from the reactor
with `deferLater` so that no pool thread ever sleeps waiting for a block. The lock is held until
the receipt arrives: the next transaction of the same account is then preflighted on the state
this one produced (a register after a deposit, say), and its nonce cannot race.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from perund.chain.account import Account
from perund.chain.client import ChainClient, PreparedTx, RawReceipt
from perund.chain.results import TxReceipt
from perund.channel.types import Address, hex_address
from perund.errors import PerundError, ProtocolError, TxTimedOut
from perund.words import GWEI_DECIMALS, plural, units_text

DEFAULT_REPLACEMENTS = 2
"""Replacements of a transaction not mined in time: at most three `tx_timeout`s in all, within
the margin of the shortest challenge duration the node accepts (three times its reaction
time)."""

RunInPool = Callable[..., Deferred[Any]]
"""`run(f, *args)`: call blocking `f(*args)` in the chain pool, a Deferred of its result."""


@dataclass(slots=True)
class _AccountSlot:
    lock: DeferredLock
    next_nonce: int | None = None
    """The nonce the next transaction uses; None means ask the node (at start, after errors)."""
    in_flight: bytes | None = None
    """The hash of the sent transaction whose receipt is awaited, if any."""


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
        try:
            if slot.next_nonce is None:
                slot.next_nonce = await self._run(client.pending_nonce_blocking, account.address)
            prepared = await self._run(
                client.prepare_blocking,
                account, tx_type, to, data, value, slot.next_nonce, self._chain_id,
            )
            await self._run(client.send_raw_blocking, tx_type, prepared.raw)
        except BaseException:
            # Whether the node took the transaction is unknown (a reply may have been lost):
            # ask it for the nonce again next time rather than guess.
            slot.next_nonce = None
            raise
        slot.next_nonce = prepared.nonce + 1
        slot.in_flight = prepared.tx_hash
        tx_hex = "0x" + prepared.tx_hash.hex()
        self.log.debug(
            "sent {tx_type} {tx_hash} from {sender} nonce {nonce}",
            tx_type=tx_type, tx_hash=tx_hex, sender=hex_address(account.address),
            nonce=prepared.nonce,
        )
        try:
            receipt = await self._mined_or_replaced(slot, account, tx_type, prepared)
        except BaseException:
            slot.next_nonce = None
            raise
        finally:
            slot.in_flight = None
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
        return client.summarize(tx_type, receipt, events_of)

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
                    raise TxTimedOut(
                        f"{pending - mined} earlier transaction(s) of "
                        f"{hex_address(address)} (nonce {mined} on) were not mined within "
                        f"{self.tx_timeout:g} s", sender=hex_address(address), nonce=mined,
                        timeout=self.tx_timeout)
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

    async def _mined_or_replaced(self, slot: _AccountSlot, account: Account, tx_type: str,
                                 prepared: PreparedTx) -> RawReceipt:
        """The receipt of `prepared` or of one of its replacements. A transaction not mined
        within `tx_timeout` is sent again with the same nonce and higher fees, up to
        `replacements` times: only one of them can be mined. A fee spike would otherwise leave
        it, and every later transaction of the account (a refutation among them), waiting
        behind it for as long as the spike lasts."""
        sent = [prepared.tx_hash]
        current = prepared
        for attempt in range(self.replacements + 1):
            try:
                return await self._wait_mined(tx_type, sent)
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
            fees = current.transaction
            assert fees is not None
            self.log.warn(
                "{tx_type} 0x{old}: not mined within {timeout:g} s; sent again with higher fees "
                "as 0x{new} (nonce {nonce}, up to {cap} gwei a gas)", tx_type=tx_type,
                old=sent[-2].hex(), new=current.tx_hash.hex(), timeout=self.tx_timeout,
                nonce=current.nonce, fee_cap=fees.max_fee_per_gas,
                cap=units_text(fees.max_fee_per_gas, GWEI_DECIMALS))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _wait_mined(self, tx_type: str, sent: list[bytes]) -> RawReceipt:
        """The receipt of whichever of `sent` (one nonce's transactions) is mined, within
        `tx_timeout`; TxTimedOut naming the last."""
        tx_hash = sent[-1]
        deadline = self._now() + self.tx_timeout
        unreachable: ProtocolError | None = None
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
            if receipt is not None:
                return receipt
            remaining = deadline - self._now()
            if remaining <= 0:
                also = "" if unreachable is None else \
                    f" (reading its receipt failed meanwhile: {unreachable.message})"
                raise TxTimedOut(
                    f"the {tx_type} transaction 0x{tx_hash.hex()} was not mined within "
                    f"{self.tx_timeout:g} s{also}",
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
