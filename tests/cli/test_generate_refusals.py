"""`perund generate DIR` never writes over a user's file, and a refused run writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from perund.cli.generate import generate
from perund.errors import ResourceExists


@pytest.mark.parametrize("existing", ["bob/session.yaml", "alice/contacts.yaml",
                                      "bob/password", "alice/keystore/off-chain.json"])
def test_an_existing_file_is_refused_before_anything_is_written(tmp_path: Path,
                                                                existing: str) -> None:
    kept = tmp_path / existing
    kept.parent.mkdir(parents=True)
    kept.write_text("notes\n")
    with pytest.raises(ResourceExists, match=f"{kept} exists: nothing was written"):
        generate(tmp_path)
    assert kept.read_text() == "notes\n"
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == [kept]


def test_a_refusal_names_the_first_existing_file_and_counts_the_others(tmp_path: Path) -> None:
    generate(tmp_path / "setup")
    with pytest.raises(ResourceExists, match=r"perund.yaml exists \(and 10 more"):
        generate(tmp_path / "setup")
