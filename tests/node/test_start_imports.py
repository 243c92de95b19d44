"""What a node start imports: never web3, eth-account, eth-keyfile or py_ecc (issue #16).

Their imports alone cost a start ~0.7 s of CPU; the node talks JSON-RPC with the standard
library, signs with coincurve and unlocks keystores with hashlib and pycryptodome instead. Each
check runs in a fresh interpreter, as a start does: this process has them all imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from perund.cli.generate import Generated

FORBIDDEN = ("web3", "eth_account", "eth_keyfile", "py_ecc")

_MARK = "forbidden modules loaded: "
_REPORT = (
    "import json, sys\n"
    "def report():\n"
    f"    found = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
    f"    print({_MARK!r} + json.dumps(found), flush=True)\n"
)


def _run(code: str, timeout: float = 120.0) -> list[str]:
    """Run `code` (which calls `report()` once) in a fresh interpreter; the forbidden modules
    loaded when it did."""
    done = subprocess.run([sys.executable, "-c", _REPORT + code], capture_output=True,
                          text=True, timeout=timeout, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [line for line in done.stdout.splitlines() if line.startswith(_MARK)]
    assert len(reports) == 1, done.stdout[-3000:]
    found: list[str] = json.loads(reports[0][len(_MARK):])
    return found


def test_importing_the_node_the_tap_and_the_plugin_loads_none_of_them() -> None:
    found = _run(
        "import perund.node, perund.tap\n"
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "import twisted.plugins\n"
        "makers = [p for p in getPlugins(IServiceMaker, twisted.plugins)\n"
        "          if p.tapname == 'perund']\n"
        "assert makers, 'the perund twistd plugin is not found'\n"
        "makers[0].options\n"  # twistd imports perund.tap for the options
        "report()\n"
    )
    assert found == []


def test_a_node_started_on_anvil_loads_none_of_them(anvil_setup: Generated) -> None:
    # A whole start: config, keystores unlocked, chain connected, stores opened, API listening.
    found = _run(
        "from twisted.internet import task\n"
        "from twisted.internet.defer import Deferred\n"
        "from perund.config import load_node_config\n"
        "from perund.node import NodeService\n"
        "async def main(reactor):\n"
        f"    node = NodeService(reactor, load_node_config({str(anvil_setup.node_config)!r}))\n"
        "    node.startService()\n"
        "    await node.ready\n"
        "    report()\n"
        "    await node.stopService()\n"
        "task.react(lambda reactor: Deferred.fromCoroutine(main(reactor)))\n"
    )
    assert found == []
