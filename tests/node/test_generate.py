"""`perund generate`: the command, and what it writes opening as working sessions."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from perund.config import load_node_config
from perund.contacts.book import ContactBook, DictContactStore
from perund.session.config import load_session_config, unlock


def test_generate_command_writes_working_sessions(tmp_path: Path) -> None:
    target = tmp_path / "setup"
    run = subprocess.run([sys.executable, "-m", "perund.cli.main", "generate", str(target)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "twistd -n perund --config" in run.stdout
    node = load_node_config(target / "perund.yaml")
    assert node.chain.url == ""
    sessions = [load_session_config(target / name / "session.yaml") for name in ("alice", "bob")]
    for config, other in zip(sessions, reversed(sessions), strict=True):
        keys = unlock(config)
        assert keys.signer().address == config.off_chain.address
        assert keys.account().address == config.on_chain.address
        assert stat.S_IMODE(config.off_chain.keystore.stat().st_mode) == 0o600
        book = ContactBook.load(config.contacts, store=DictContactStore())
        assert book.knows(other.off_chain.address)
    again = subprocess.run([sys.executable, "-m", "perund.cli.main", "generate", str(target)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "exists" in again.stderr
