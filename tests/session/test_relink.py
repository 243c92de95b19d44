"""A peer that restarts behind a connection the other side still believes in.

A power loss sends no FIN: the higher address keeps its own dial as the link in use, while the
lower address comes back, restores its channels (each waits for the peer's Sync) and dials. The
higher side switches to that dial, which both prefer, without having lost a link, so nothing
told its client a new one is up; its channels sent their Sync on the old one already. It must
still answer the restarted side's Sync, or every channel of that side waits for good.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from perund.chain.backend import ChainBackend
from perund.channel.types import ETH, Address
from perund.peer.admission import PeerLimits
from perund.peer.manager import PeerManager
from perund.session.client import ChannelClient
from perund.storage import MemoryStore

from .conftest import ETHER, User, listening_pair, open_between
from .hostile import until


def _restarted(user: User, store: MemoryStore, endpoints: dict[Address, str]) -> ChannelClient:
    """`user`'s node after a restart: new peer links and client, the same keys and store."""
    old = user.client
    peers = PeerManager(reactor, old.signer, endpoints.get, "tcp:0:interface=127.0.0.1",
                        dial_timeout=5.0, keepalive_interval=None,
                        limits=PeerLimits(logged_refusals=1000))
    client = ChannelClient(
        reactor, signer=old.signer, receiver=old.receiver, peers=peers,
        deployment=old.deployment, store=store, funder=old.funder, settler=old.settler,
        is_contact=old.is_contact, response_timeout=5.0, request_timeout=5.0)
    client.restore()
    return client


@pytest_twisted.ensureDeferred
async def test_the_lower_side_restarted_behind_the_higher_sides_dial_pays_again(
        chain: ChainBackend) -> None:
    stores = {"alice": MemoryStore(), "bob": MemoryStore()}
    pair = await listening_pair(chain, alice_store=stores["alice"], bob_store=stores["bob"])
    low, high = sorted((pair.alice, pair.bob), key=lambda u: u.client.address)
    restarted = None
    try:
        cid = await open_between(low, high, ETHER, ETHER)
        await low.client.send(cid, ((ETH, 5),))
        # The link in use becomes the higher side's own dial (it reconnects first), and both
        # channels synced on it.
        low.peers.keep_connected(high.client.address, False)
        await high.peers.disconnect(low.client.address)

        def higher_dial() -> bool:
            link = low.peers.current_connection(high.client.address)
            return link is not None and link.dialled_by == high.client.address

        await until(higher_dial, "the higher side dialled again")
        old_link = low.peers.current_connection(high.client.address)
        assert old_link is not None and old_link.transport is not None
        await until(lambda: not high.client.channels[cid].needs_sync
                    and high.client.channels[cid].sync_sent, "synced on the higher side's dial")

        # The lower side's machine loses power: its process reads nothing more, and no FIN
        # reaches the higher side. It comes back on its store and dials.
        old_link.transport.pauseProducing()
        endpoints: dict[Address, str] = {}
        restarted = _restarted(low, stores[low.name], endpoints)
        endpoints[high.client.address] = f"tcp:host=127.0.0.1:port={high.peers.port}"
        assert restarted.channels[cid].resyncing

        # Its payment waits for the higher side's Sync, which must come on the new dial.
        paid = await restarted.send(cid, ((ETH, 7),))
        assert paid.current is not None and not restarted.channels[cid].resyncing
        await until(lambda: high.client.channels[cid].current == paid.current, "payee has it")
        back = await high.client.send(cid, ((ETH, 3),))
        assert restarted.channels[cid].current == back.current
        assert back.current is not None
        balances = back.current.state.balances[0]
        ours = restarted.channels[cid].index
        assert balances[ours] == ETHER - 5 - 7 + 3 and balances[1 - ours] == ETHER + 5 + 7 - 3
    finally:
        if restarted is not None:
            await restarted.peers.stop()
        await low.peers.stop()
        await high.peers.stop()
