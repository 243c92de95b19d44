"""Virtual-channel safety on anvil with real daemons (issue #17, point 4; docs/protocol.md
"When someone vanishes or cheats"): at each step of opening and closing a virtual channel one
of alice, ingrid and carol crashes (SIGKILL) or stops answering, exactly there, and everyone
recovers their money on-chain to the wei.

Every peer connection goes through a relay (tests/integration/relay.py) that fails the victim at
the first frame of the step: the crashed party's last frame is delivered or not, the silent
party's node runs on but is cut off. The victim then comes back (restarted, or its connections
restored) or never does. Whatever happened, the test then settles everything the way a user
would (through the API: pay and close what is open, close the ledgers, cooperatively where the
peer answers, else through disputes, moving the chain's clock once every registration is
answered) and checks each ledger's payouts and each account's balance change net of its gas
against the outcome: the virtual channel's last state when it opened for both parties,
otherwise nothing moved. Ingrid ends exactly where she started.

Ledgers: alice-ingrid and carol-ingrid, 5 ETH from each side. Virtual channel alice-carol:
alice 2, carol 1; alice pays carol 0.25 in it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from perund.chain.anvil import Anvil
from perund.cli.generate import Generated
from perund.wire.messages import (
    Message,
    Update,
    UpdateAccept,
    VirtualAccept,
    VirtualFold,
    VirtualLock,
    VirtualPropose,
)
from tests.integration.daemons import assert_clean_log
from tests.integration.hub import CHALLENGE, USERS, Hub
from tests.integration.onchain import until, wei
from tests.integration.relay import Fault, Kind

TIMEOUTS = {"response": "4s", "tx": "10s", "funding": "8s", "peer_dial": "2s",
            "peer_request": "3s"}
"""Short waits: a party that does not answer is given up on after seconds."""
LOCK_WINDOW = "3s"
PAYMENT = "0.25"
PARTIES = ("alice", "carol")


@pytest.fixture
def hub(hub_setup: Generated, tmp_path: Path, anvil: Anvil) -> Iterator[Hub]:
    h = Hub(hub_setup, tmp_path, anvil, timeouts=TIMEOUTS, lock_window=LOCK_WINDOW,
            relayed=True)
    try:
        yield h
    finally:
        h.close()
    for daemon in h.daemons.values():
        assert_clean_log(daemon)


@dataclass(frozen=True)
class Case:
    """Fail `victim` at the first `message` from `sender` (to `receiver`)."""

    message: type[Message]
    sender: str
    receiver: str
    victim: str
    kind: Kind
    deliver: bool
    back: bool

    def fault(self) -> Fault:
        return Fault(self.message, self.sender, self.kind, self.deliver,
                     receiver=self.receiver, victim=self.victim)

    def __str__(self) -> str:
        if self.kind is Kind.CRASH:
            how = "crash-after" if self.deliver else "crash-before"
        else:
            how = "silent-after" if self.deliver else "silent-before"
        return f"{self.message.__name__}-{self.sender}-to-{self.receiver}-{self.victim}-{how}-" \
               f"{'back' if self.back else 'gone'}"


ALL_VARIANTS = os.environ.get("PERUND_ALL_VARIANTS") == "1"
"""The whole matrix (24 cases) takes ~6 minutes on 2 busy cores; by default four core cases
run, one per kind of step (a lock, ingrid's answers, the final update, a fold), in ~40 s."""


def variant(case: Case, *, core: bool = False) -> Any:
    """One parameter: the core cases always run, the others with PERUND_ALL_VARIANTS=1."""
    marks = [] if core else [pytest.mark.skipif(
        not ALL_VARIANTS, reason="an extra variant: PERUND_ALL_VARIANTS=1 runs the whole matrix")]
    return pytest.param(case, marks=marks, id=str(case))


class Run:
    """One test's run: the hub, who is up, and what the users did."""

    def __init__(self, hub: Hub) -> None:
        self.h = hub
        self.down: set[str] = set()
        self.la, self.lc = hub.ledgers()
        self.paid = False

    @property
    def alive(self) -> list[str]:
        return [n for n in USERS if n not in self.down]

    def fail(self, case: Case) -> Fault:
        assert self.h.relay is not None
        return self.h.relay.arm(case.fault())

    def recover(self, case: Case) -> None:
        """The victim comes back, or is gone for good."""
        assert self.h.relay is not None
        if not case.back:
            self.down.add(case.victim)
            return
        if case.kind is Kind.CRASH:
            self.h.restart(case.victim)
        self.h.relay.heal(case.victim)

    def virtual(self) -> str | None:
        """The virtual channel's ID, as any live party knows it."""
        for name in PARTIES:
            if name in self.down:
                continue
            for channel in self.h.call(name, "channel_list"):
                if channel.get("kind") == "virtual":
                    return str(channel["channelId"])
        return None

    def virtual_phases(self, vid: str) -> dict[str, str]:
        phases = {}
        for name in PARTIES:
            if name not in self.down:
                listed = {c["channelId"]: c for c in self.h.call(name, "channel_list")}
                phases[name] = listed[vid]["phase"] if vid in listed else "unknown"
        return phases

    def open_virtual(self, patient: bool = False) -> tuple[Future[Any], Future[Any]]:
        """alice proposes the virtual channel, carol's user accepts it if it arrives; both
        answers (as JSON-RPC responses, errors included)."""
        h = self.h

        def carol_accepts() -> dict[str, Any]:
            with h.pushes("carol") as pushes:
                try:
                    proposal = pushes.wait(lambda p: "proposalId" in p, timeout=15)
                except TimeoutError:
                    return {"error": "no proposal came"}
                return h.request("carol", "channel_respondProposal",
                                 proposalId=proposal["proposalId"], accept=True)

        accepting = h.background(carol_accepts)
        time.sleep(0.5)  # carol subscribed first (a later push is kept for her anyway)
        opening = h.background(h.request, "alice", "channel_open", peer="carol", via="ingrid",
                               balances={"ETH": {"self": "2", "peer": "1"}},
                               challengeDuration=CHALLENGE)
        return opening, accepting

    def pay(self, vid: str) -> None:
        self.h.call("alice", "channel_send", channelId=vid, payments=[
            {"currency": "ETH", "payee": "carol", "amount": PAYMENT}])
        self.paid = True

    # -- settling everything ------------------------------------------------------------------

    def quiet(self) -> bool:
        """Every live node's disputed channel is registered at its latest version: nobody
        honest has anything left to refute with, so the clock may move."""
        for name in self.alive:
            for channel in self.h.call(name, "channel_list"):
                if channel["phase"] == "disputed":
                    on_chain = channel.get("onChain") or {}
                    if int(on_chain.get("version", -1)) < int(channel["version"]):
                        return False
        return True

    def closed_everywhere(self, ids: list[str]) -> bool:
        for name in self.alive:
            listed = {c["channelId"]: c["phase"] for c in self.h.call(name, "channel_list")}
            if any(listed.get(cid, "closed") != "closed" for cid in ids):
                return False
        return True

    def settle(self, ids: list[str], timeout: float = 150.0) -> None:
        """Until every channel in `ids` is closed at every live party; the chain's clock moves
        past the challenge period whenever some channel is disputed and the nodes are
        quiet."""
        deadline = time.monotonic() + timeout
        while not self.closed_everywhere(ids):
            if time.monotonic() > deadline:
                states = {n: [(c["channelId"][:10], c["phase"], c["version"],
                               (c.get("onChain") or {}).get("version"))
                              for c in self.h.call(n, "channel_list")] for n in self.alive}
                raise AssertionError(f"not settled: {states}")
            if self.disputed() and self.quiet():
                time.sleep(1.0)
                if self.quiet():
                    self.h.travel(CHALLENGE + 1)
            time.sleep(0.5)

    def disputed(self) -> bool:
        return any(c["phase"] == "disputed" for name in self.alive
                   for c in self.h.call(name, "channel_list"))

    def finish(self, vid: str | None) -> None:
        """Close whatever is open, the way the users would."""
        h = self.h
        closings: list[Future[Any]] = []
        if vid is not None:
            phases = self.virtual_phases(vid)
            if len(phases) == 2 and all(p == "open" for p in phases.values()):
                if not self.paid:
                    self.pay(vid)
                closings.append(h.background(self._close_virtual, vid))
                self.settle([vid])
            else:
                # Alone with it (the other party gone, or the other's lock of unknown fate):
                # through a dispute, which takes the ledgers that lock it on-chain too. A close
                # of ours may be proposing its final update again meanwhile (`updating`): the
                # user forces it all the same.
                closings.extend(h.background(h.request, name, "channel_close", channelId=vid,
                                             force=True)
                                for name, phase in phases.items()
                                if phase in ("open", "updating"))
        pending: list[Future[Any]] = []
        for ledger, party in ((self.la, "alice"), (self.lc, "carol")):
            ends = [n for n in (party, "ingrid") if n not in self.down]
            # An update under way (a fold going again, say) ends first: users close channels
            # at rest.
            def at_rest(ledger: str = ledger, ends: list[str] = ends) -> bool:
                return all(h.phase(n, ledger) != "updating" for n in ends)

            until(at_rest, "the ledger at rest", 30)
            for name in ends:
                if h.phase(name, ledger) == "open":
                    # Cooperatively when the other end answers, else through a dispute.
                    pending.append(h.background(self._close, name, ledger,
                                                next((n for n in ends if n != name), None)))
                    break
        self.settle([self.la, self.lc])
        for closing in pending + closings:
            closing.result(30)
        if vid is not None:
            # The virtual channel ends closed everywhere, with its ledgers at the latest.
            self.settle([vid], timeout=30)

    def _close_virtual(self, vid: str) -> dict[str, Any]:
        return self._close("alice", vid, "carol")

    def _close(self, name: str, channel_id: str, peer: str | None) -> dict[str, Any]:
        """`name` closes the channel; `peer`'s user accepts the final state if asked."""
        if peer is None:
            # The other end is down for good: settle without waiting for it.
            return self.h.request(name, "channel_close", channelId=channel_id, peerWait=0)
        with self.h.pushes(peer) as pushes:
            closing = self.h.background(self.h.request, name, "channel_close",
                                        channelId=channel_id)
            with contextlib.suppress(TimeoutError):
                final = pushes.wait(lambda p: p.get("type") == "final"
                                    and p.get("channelId") == channel_id, timeout=15)
                self.h.request(peer, "channel_respondUpdate", channelId=channel_id,
                               updateId=final["updateId"], accept=True)
            answer: dict[str, Any] = closing.result(150)
            return answer

    async def check(self) -> None:
        """Payouts and each account's net change, to the wei."""
        h = self.h
        alice, carol = (wei("4.75"), wei("5.25")) if self.paid else (wei("5"), wei("5"))
        await h.check_payouts(self.la, alice=alice, ingrid=wei("10") - alice)
        await h.check_payouts(self.lc, carol=carol, ingrid=wei("10") - carol)
        net = h.ledger.net()
        assert net == {"alice": alice - wei("5"), "carol": carol - wei("5"), "ingrid": 0}, net


# -- opening --------------------------------------------------------------------------------------


OPENING = [
    # propose: carol never hears of it
    variant(Case(VirtualPropose, "alice", "carol", "alice", Kind.CRASH, False, True)),
    variant(Case(VirtualPropose, "alice", "carol", "carol", Kind.CRASH, False, False)),
    # accept: alice never hears of carol's acceptance, or hears it and carol is gone
    variant(Case(VirtualAccept, "carol", "alice", "carol", Kind.CRASH, True, True)),
    variant(Case(VirtualAccept, "carol", "alice", "carol", Kind.SILENCE, False, True)),
    # version 0 fully signed at alice only
    variant(Case(UpdateAccept, "alice", "carol", "alice", Kind.CRASH, False, True)),
    # the locks
    variant(Case(VirtualLock, "alice", "ingrid", "alice", Kind.CRASH, False, True)),
    variant(Case(VirtualLock, "alice", "ingrid", "alice", Kind.CRASH, True, True)),
    variant(Case(VirtualLock, "alice", "ingrid", "alice", Kind.CRASH, True, False)),
    variant(Case(VirtualLock, "carol", "ingrid", "carol", Kind.SILENCE, True, True),
            core=True),
    variant(Case(VirtualLock, "carol", "ingrid", "ingrid", Kind.CRASH, False, True)),
    # ingrid holds both locks countersigned; her answers are lost
    variant(Case(UpdateAccept, "ingrid", "alice", "ingrid", Kind.CRASH, False, True),
            core=True),
    variant(Case(UpdateAccept, "ingrid", "alice", "ingrid", Kind.CRASH, False, False)),
    variant(Case(UpdateAccept, "ingrid", "carol", "ingrid", Kind.SILENCE, True, True)),
    variant(Case(UpdateAccept, "ingrid", "carol", "ingrid", Kind.SILENCE, True, False)),
]


@pytest.mark.anvil
@pytest.mark.slow
@pytest.mark.parametrize("case", OPENING)
@pytest_twisted.ensureDeferred
async def test_a_party_failing_while_the_virtual_channel_opens(hub: Hub, case: Case) -> None:
    run = Run(hub)
    fault = run.fail(case)
    opening, accepting = run.open_virtual()
    fault.wait()
    for answer in (opening, accepting):
        # A killed daemon's pending call just fails.
        with contextlib.suppress(Exception):
            answer.result(60)
    run.recover(case)
    vid = run.virtual()
    if vid is not None:
        # Each live party ends with the channel open or closed, never half-way, and two live
        # parties agree.
        # (With ingrid gone for good, a lock of unknown fate keeps it funding: the user
        # settles the ledger instead.)
        settled = ("open", "closed", "unknown") + (("funding",) if "ingrid" in run.down else ())
        phases = until(lambda: (lambda p: p if all(x in settled for x in p.values()) else None)(
            run.virtual_phases(vid)), "the virtual channel open or closed", 60)
        if len(phases) == 2 and case.victim != "ingrid":
            known = {p for p in phases.values() if p != "unknown"}
            assert len(known) <= 1 or known == {"closed"}, phases
    run.finish(vid)
    await run.check()


# -- closing --------------------------------------------------------------------------------------


def _final(message: Message) -> bool:
    return isinstance(message, Update) and message.state.is_final


CLOSING = [
    # the final update of the virtual channel
    variant(Case(Update, "alice", "carol", "alice", Kind.CRASH, False, False)),
    variant(Case(Update, "alice", "carol", "carol", Kind.CRASH, False, True), core=True),
    variant(Case(UpdateAccept, "carol", "alice", "carol", Kind.CRASH, False, True)),
    variant(Case(UpdateAccept, "carol", "alice", "carol", Kind.CRASH, False, False)),
    # the folds
    variant(Case(VirtualFold, "alice", "ingrid", "alice", Kind.CRASH, False, True)),
    variant(Case(VirtualFold, "alice", "ingrid", "alice", Kind.CRASH, True, False),
            core=True),
    variant(Case(VirtualFold, "carol", "ingrid", "carol", Kind.SILENCE, True, True)),
    # ingrid holds both folds countersigned; her answers are lost
    variant(Case(UpdateAccept, "ingrid", "carol", "ingrid", Kind.CRASH, False, True)),
    variant(Case(UpdateAccept, "ingrid", "carol", "ingrid", Kind.CRASH, False, False)),
    variant(Case(UpdateAccept, "ingrid", "alice", "ingrid", Kind.SILENCE, True, False)),
]


@pytest.mark.anvil
@pytest.mark.slow
@pytest.mark.parametrize("case", CLOSING)
@pytest_twisted.ensureDeferred
async def test_a_party_failing_while_the_virtual_channel_closes(hub: Hub, case: Case) -> None:
    run = Run(hub)
    vid = hub.open("alice", "carol", "2", "1", via="ingrid")["channelId"]
    run.pay(vid)
    fault = case.fault()
    if case.message is Update:
        fault.when = _final
    assert hub.relay is not None
    hub.relay.arm(fault)
    closing = hub.background(run._close_virtual, vid)
    fault.wait()
    if case.back:
        # The others react first (their waits run out), then the victim returns.
        with contextlib.suppress(Exception):
            closing.result(10)
    run.recover(case)
    run.finish(vid)
    await run.check()
