"""`free_port`: the ports handed to servers the tests and the demo start a moment later."""

from __future__ import annotations

import json
import subprocess
import sys

from perund.chain import anvil
from perund.chain.anvil import free_port


def test_ports_are_never_handed_out_twice_before_their_servers_bind() -> None:
    # Nothing binds these: a check-then-bind alone would hand some of them out again.
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(p in anvil._unassigned_ports() for p in ports)


def test_parallel_processes_get_disjoint_ports() -> None:
    script = ("import json\nfrom perund.chain.anvil import free_port\n"
              "print(json.dumps([free_port() for _ in range(150)]))")
    others = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
              for _ in range(2)]
    ours = {free_port() for _ in range(150)}
    theirs = [set(json.loads(p.communicate(timeout=60)[0])) for p in others]
    assert not ours & theirs[0] and not ours & theirs[1] and not theirs[0] & theirs[1]


def test_the_ephemeral_range_is_avoided() -> None:
    ports = anvil._unassigned_ports()
    with open("/proc/sys/net/ipv4/ip_local_port_range") as limits:
        low, high = (int(x) for x in limits.read().split())
    assert ports.stop <= low or ports.start > high
