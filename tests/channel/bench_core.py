"""Micro-benchmark of the pure core: one payment through both cores in one process.

propose (sign) → the responder receives (verify, countersign) → the proposer receives the
accept (verify). No I/O, no codec. Run: `.venv/bin/python -m tests.channel.bench_core [N]`;
prints one JSON object. Not a test (timings never go into assertions).
"""

from __future__ import annotations

import json
import sys
import time

from perund.channel.changes import OwnUpdate, UpdateAcceptReceived, UpdateReceived
from perund.channel.events import SendUpdate, SendUpdateAccept
from perund.channel.machine import transition
from perund.channel.types import ETH
from tests.channel.factories import ALICE, BOB, make_pair


def run(payments: int) -> dict[str, float]:
    """Time `payments` sequential payments Alice → Bob (alternating with Bob → Alice)."""
    alice, bob = make_pair()
    pay_alice = OwnUpdate(ALICE, ((ETH, 1),))
    pay_bob = OwnUpdate(BOB, ((ETH, 1),))
    start = time.perf_counter()
    for i in range(payments):
        if i % 2 == 0:
            proposer, responder, change, ps, rs = alice, bob, pay_alice, ALICE, BOB
        else:
            proposer, responder, change, ps, rs = bob, alice, pay_bob, BOB, ALICE
        proposer, events = transition(proposer, change)
        update = events[1]
        assert isinstance(update, SendUpdate)
        responder, events = transition(
            responder, UpdateReceived(ps.address, update.state, update.signature, rs)
        )
        accept = events[1]
        assert isinstance(accept, SendUpdateAccept)
        proposer, events = transition(
            proposer,
            UpdateAcceptReceived(rs.address, accept.channel_id, accept.version, accept.signature),
        )
        alice, bob = (proposer, responder) if i % 2 == 0 else (responder, proposer)
    elapsed = time.perf_counter() - start
    assert alice.current == bob.current
    return {
        "payments": payments,
        "us_per_payment": round(elapsed / payments * 1e6, 1),
        "payments_per_s": round(payments / elapsed),
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)))
