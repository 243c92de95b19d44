"""Gas of the Adjudicator's channel lives and dispute paths, measured on a fresh anvil, beside
Perun's figures for the same work.

Run: `make bench` (or `.venv/bin/python bench/gas.py`). Prints one JSON object:

    {"cooperative": {"calls": {name: gas, ...}, "total": N},   # ETH only
     "dispute": {...},                                        # ETH only
     "eth_token_cooperative": {...}, "eth_token_cooperative_permit": {...},
     "token_cooperative": {...}, "eth_token_dispute": {...},
     "token_operations": {"approve": N, "deposit_first": N, "deposit_second": N,
                          "permit_deposit": N, "payouts_in_concludeFinal": N},
     "virtual": {path: {"calls": {...}, "total": N}, ...},
     "perun": {figure: gas, ...},
     "versus_perun": {life: {"perund": N, "perun": N, "percent": P, "goal": N, "met": bool}}}

with the receipts' gasUsed of every transaction. It exits non-zero when any account did not end
up with exactly its due in ETH and tokens (to the unit, transaction fees accounted for).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import gas_tokens
import gas_virtual
from gas_chain import CHALLENGE, ETHER, Run, as_params, as_state
from web3 import Web3

from perund.chain.anvil import Anvil

PERUN: dict[str, int] = {
    # go-perun's Adjudicator with its ETH and ERC20 asset holders and an OpenZeppelin token, on
    # anvil, one approve per token deposit (docs/contract.md "Gas").
    "eth_cooperative": 331_082,
    "eth_dispute": 472_363,
    "eth_token_cooperative": 707_193,
    "token_cooperative": 478_359,
    "eth_token_dispute": 863_287,
    "approve": 46_263,
    "token_deposit": 64_250,
    "token_withdrawal": 51_733,
}
GOAL_PERCENT = 50
"""The aim for the token lives: at most half of Perun's gas."""


def cooperative(run: Run) -> dict[str, int]:
    """ETH only: two deposits, concludeFinal paying both."""
    run.open_books()
    alice, bob = run.accounts[:2]
    fn = run.adjudicator.functions
    params = run.params()
    final = run.state(params, 7, (run.eth,), ((ETHER + ETHER // 3, ETHER - ETHER // 3),), True)
    cid = final.channel_id
    calls = {
        "deposit_0": run.send(alice, fn.deposit(cid, 0, run.eth, ETHER), ETHER),
        "deposit_1": run.send(bob, fn.deposit(cid, 1, run.eth, ETHER), ETHER),
        "concludeFinal": run.send(
            alice, fn.concludeFinal(as_params(params), as_state(final), run.sigs(params, final))
        ),
    }
    run.pay_out(params, final)
    run.books.check()
    return calls


def dispute(run: Run) -> dict[str, int]:
    """ETH only: two deposits, register v1, refute with v2, conclude after the timeout."""
    run.open_books()
    alice, bob = run.accounts[:2]
    fn = run.adjudicator.functions
    params = run.params()
    v1 = run.state(params, 1, (run.eth,), ((ETHER + ETHER // 2, ETHER // 2),))
    v2 = run.state(params, 2, (run.eth,), ((ETHER - ETHER // 4, ETHER + ETHER // 4),))
    cid = v1.channel_id
    p = as_params(params)
    calls = {
        "deposit_0": run.send(alice, fn.deposit(cid, 0, run.eth, ETHER), ETHER),
        "deposit_1": run.send(bob, fn.deposit(cid, 1, run.eth, ETHER), ETHER),
        "register": run.send(alice, fn.register(p, as_state(v1), run.sigs(params, v1))),
        "refute": run.send(bob, fn.register(p, as_state(v2), run.sigs(params, v2))),
    }
    run.advance(CHALLENGE)
    calls["conclude"] = run.send(bob, fn.conclude(p, as_state(v2)))
    run.pay_out(params, v2)
    run.books.check()
    return calls


def _life(calls: dict[str, int]) -> dict[str, Any]:
    return {"calls": calls, "total": sum(calls.values())}


def _versus(perund: int, perun: int, goal: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "perund": perund,
        "perun": perun,
        "percent": round(100 * perund / perun, 1),
    }
    if goal:
        limit = perun * GOAL_PERCENT // 100
        shown.update(goal=limit, met=perund <= limit)
    return shown


def main() -> int:
    with Anvil() as anvil:
        run = Run(Web3(Web3.HTTPProvider(anvil.url)), anvil.private_keys)
        report: dict[str, Any] = {
            "cooperative": _life(cooperative(run)),
            "dispute": _life(dispute(run)),
            "eth_token_cooperative": _life(gas_tokens.eth_token_cooperative(run)),
            "eth_token_cooperative_permit": _life(
                gas_tokens.eth_token_cooperative(run, permit=True)
            ),
            "token_cooperative": _life(gas_tokens.token_cooperative(run)),
            "eth_token_dispute": _life(gas_tokens.eth_token_dispute(run)),
        }
        token_only = report["token_cooperative"]["calls"]
        report["token_operations"] = {
            "approve": token_only["approve_0"],
            # The channel's first token deposit, also the Adjudicator's first of this token:
            # two fresh slots (the holdings and the Adjudicator's token balance).
            "deposit_first": token_only["deposit_0"],
            # The other participant's: both slots already written.
            "deposit_second": token_only["deposit_1"],
            "permit_deposit": gas_tokens.permit_deposit(run),
            # What the token's two payouts add to concludeFinal (Perun: one withdrawal each).
            "payouts_in_concludeFinal": report["eth_token_cooperative"]["calls"]["concludeFinal"]
            - report["cooperative"]["calls"]["concludeFinal"],
        }
        report["virtual"] = {
            name: _life(path(run))
            for name, path in (
                ("carol_vanishes", gas_virtual.carol_vanishes),
                ("stale_virtual_state_refuted", gas_virtual.stale_virtual_state_refuted),
                ("ledger_without_lock_refuted", gas_virtual.ledger_without_lock_refuted),
            )
        }
    ops = report["token_operations"]
    report["perun"] = PERUN
    report["versus_perun"] = {
        "eth_cooperative": _versus(report["cooperative"]["total"], PERUN["eth_cooperative"], False),
        "eth_dispute": _versus(report["dispute"]["total"], PERUN["eth_dispute"], False),
        "eth_token_cooperative": _versus(
            report["eth_token_cooperative"]["total"], PERUN["eth_token_cooperative"], True
        ),
        "eth_token_cooperative_permit": _versus(
            report["eth_token_cooperative_permit"]["total"], PERUN["eth_token_cooperative"], True
        ),
        "token_cooperative": _versus(
            report["token_cooperative"]["total"], PERUN["token_cooperative"], False
        ),
        "eth_token_dispute": _versus(
            report["eth_token_dispute"]["total"], PERUN["eth_token_dispute"], True
        ),
        "approve": _versus(ops["approve"], PERUN["approve"], False),
        "token_deposit": _versus(ops["deposit_first"], PERUN["token_deposit"], False),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
