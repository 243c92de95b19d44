"""ChainSettlement on the embedded chain: deposits are never made twice."""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet import reactor

from perund.chain.account import Account
from perund.chain.backend import ChainBackend
from perund.channel import events as ev
from perund.channel.encoding import Signer, channel_id
from perund.channel.types import ETH, Params
from perund.errors import PeerNotFunded
from perund.session.onchain import ChainSettlement

from .conftest import ETHER


def funding(chain: ChainBackend, a: Account, b: Account) -> tuple[ev.Fund, ev.Fund]:
    assert chain.chain_id is not None and chain.adjudicator is not None
    params = Params(60, int.from_bytes(os.urandom(32), "big"),
                    (Signer(os.urandom(32)).address, Signer(os.urandom(32)).address),
                    (a.address, b.address))
    cid = channel_id(chain.chain_id, chain.adjudicator, params)
    balances = ((2 * ETHER, ETHER),)
    return (ev.Fund(cid, params, 0, (ETH,), balances), ev.Fund(cid, params, 1, (ETH,), balances))


@pytest_twisted.ensureDeferred
async def test_a_restarted_funding_does_not_deposit_twice(chain: ChainBackend) -> None:
    keys = chain.dev_private_keys()
    alice, bob = Account(keys[1]), Account(keys[2])
    first = ChainSettlement(reactor, chain, alice, poll_interval=0.02, funding_timeout=0.2)
    mine, theirs = funding(chain, alice, bob)
    with pytest.raises(PeerNotFunded):
        await first.fund(mine)  # bob never funds: our deposit is made, then the deadline
    assert len(first.receipts) == 1
    # The node restarts and funds again: the deposit on-chain is recognised, not repeated.
    again = ChainSettlement(reactor, chain, alice, poll_interval=0.02, funding_timeout=5.0)
    bobs = ChainSettlement(reactor, chain, bob, poll_interval=0.02, funding_timeout=5.0)
    await bobs.fund(theirs)
    await again.fund(mine)
    assert again.receipts == [] and len(bobs.receipts) == 1
    assert await chain.holdings(mine.channel_id) == (2 * ETHER, ETHER)
