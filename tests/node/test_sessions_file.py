"""sessions.json is written off the reactor thread, a write covering every change made while
the one before ran, and a credential change is answered only once it is on disk (audit
finding 6: 370 changes a second, each written and fsynced twice on the reactor, raised
another user's median latency from 2 to 50 ms)."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import pytest
import pytest_twisted

from perund.api.credentials import OPERATOR
from perund.api.method_spec import CallContext
from perund.cli.generate import Generated
from perund.config import load_node_config
from tests.node.test_sessions import running

AS_OPERATOR = CallContext("http", credential=OPERATOR)


def _on_disk(path: Any) -> set[str]:
    document = json.loads(path.read_text())
    return {c["id"] for s in document["sessions"] for c in s["credentials"]}


@pytest.mark.anvil
@pytest_twisted.ensureDeferred
async def test_credential_changes_are_written_off_the_reactor_grouped_and_then_answered(
        anvil_setup: Generated, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_node_config(anvil_setup.node_config)
    async with running(config) as node:
        alice = await node.open_session(str(anvil_setup.users[0].session_file))
        file = node.sessions_file
        on_reactor: list[bool] = []
        fsync = os.fsync

        def watched(fd: int) -> None:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(file)) or target == str(file.parent):
                on_reactor.append(threading.current_thread() is threading.main_thread())
            fsync(fd)

        monkeypatch.setattr(os, "fsync", watched)
        dispatcher = node.site.dispatcher
        mint = [{"jsonrpc": "2.0", "id": i, "method": "session_createToken",
                 "params": {"sessionId": "0x" + alice.id, "scope": "read"}} for i in range(20)]
        minted = await dispatcher.dispatch(mint, AS_OPERATOR)
        ids = {reply["result"]["tokenId"][2:] for reply in minted}
        assert len(ids) == 20
        assert ids <= _on_disk(file)  # answered once on disk
        # One write for the first change, one more for the 19 made while it ran: a file
        # fsync and a folder fsync each, none on the reactor thread.
        assert on_reactor and not any(on_reactor)
        assert len(on_reactor) <= 4

        on_reactor.clear()
        revoke = [{"jsonrpc": "2.0", "id": i, "method": "session_revokeToken",
                   "params": {"sessionId": "0x" + alice.id, "tokenId": "0x" + token_id}}
                  for i, token_id in enumerate(sorted(ids))]
        revoked = await dispatcher.dispatch(revoke, AS_OPERATOR)
        assert all(reply.get("result") is True for reply in revoked)
        assert not ids & _on_disk(file)  # a revocation is answered only once durable
        assert on_reactor and not any(on_reactor) and len(on_reactor) <= 4
