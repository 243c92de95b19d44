"""The embedded chain's folder: set aside, never overwritten."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor

from perund.chain.embedded import EmbeddedChain


def test_setting_the_embedded_chain_aside_twice_within_a_second_keeps_both(
        tmp_path: Path) -> None:
    """`--fresh-chain` twice in one second (a start refused for lost channels, then one that
    accepts them) failed the second start: the folder's name, stamped in seconds, was taken."""
    chain = EmbeddedChain(reactor, tmp_path / "devchain")
    asides = []
    for marker in ("first", "second", "third"):
        (tmp_path / "devchain").mkdir()
        (tmp_path / "devchain" / "state.json").write_text(marker)
        aside = chain.reset()
        assert aside is not None
        asides.append(aside)
    assert len(set(asides)) == 3
    assert [(a / "state.json").read_text() for a in asides] == ["first", "second", "third"]
    assert chain.reset() is None  # nothing left to set aside
