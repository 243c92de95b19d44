"""The committed artifacts are what contracts/compile.js makes of the committed sources."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import ADJUDICATOR_JSON, ROOT, TEST_ARTIFACTS

TEST_CONTRACTS = ("EvilToken", "FeeToken", "HostileToken", "NoBoolToken", "TestReceiver",
                  "TestToken")
COMMITTED = {
    Path("perund/chain/artifacts/Adjudicator.json"): ADJUDICATOR_JSON,
    **{
        Path(f"tests/contracts/artifacts/{name}.json"): TEST_ARTIFACTS / f"{name}.json"
        for name in TEST_CONTRACTS
    },
    # Package data too: the embedded dev chain deploys the test token PRN.
    Path("perund/chain/artifacts/TestToken.json"): ADJUDICATOR_JSON.with_name("TestToken.json"),
}


@pytest.fixture(scope="module")
def recompiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run `make deps`")
    out = tmp_path_factory.mktemp("artifacts")
    subprocess.run(
        [node, str(ROOT / "contracts" / "compile.js"), "--out", str(out)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return out


@pytest.mark.parametrize("relative", sorted(COMMITTED), ids=str)
def test_artifact_is_fresh(recompiled: Path, relative: Path) -> None:
    fresh = (recompiled / relative).read_bytes()
    committed = COMMITTED[relative].read_bytes()
    assert fresh == committed, f"{relative} is stale: run `make compile` and commit the result"


def test_no_other_artifacts_appear(recompiled: Path) -> None:
    produced = {p.relative_to(recompiled) for p in recompiled.rglob("*.json")}
    assert produced == set(COMMITTED), "contracts changed: run `make compile` and commit artifacts"


def test_artifact_pins_compiler_and_source() -> None:
    artifact = json.loads(ADJUDICATOR_JSON.read_text())
    assert artifact["contractName"] == "Adjudicator"
    assert artifact["compiler"]["version"].startswith("0.8.28+")
    assert artifact["compiler"]["evmVersion"] == "cancun"
    assert artifact["compiler"]["optimizer"]["enabled"] is True
    source = (ROOT / "contracts" / "Adjudicator.sol").read_bytes()
    assert artifact["sourceHash"] == hashlib.sha256(source).hexdigest()
    # The code depends on the files the Adjudicator imports too: the artifact pins each of them.
    parts = sorted(p.name for p in (ROOT / "contracts").glob("*.sol"))
    assert parts == ["Adjudicator.sol", "AssetTransfers.sol", "ChannelEncoding.sol"]
    for name in parts:
        text = (ROOT / "contracts" / name).read_bytes()
        assert artifact["sourceHashes"][f"contracts/{name}"] == hashlib.sha256(text).hexdigest()
    assert (
        artifact["deployedBytecode"].startswith("0x") and len(artifact["deployedBytecode"]) > 1000
    )


def test_compile_refuses_another_solc_version(tmp_path: Path) -> None:
    """compile.js checks the pinned version at run time, not just at install time."""
    node = shutil.which("node")
    assert node is not None
    script = (ROOT / "contracts" / "compile.js").read_text()
    assert "SOLC_VERSION = '0.8.28'" in script
    fake = tmp_path / "contracts"
    fake.mkdir()
    (fake / "compile.js").write_text(
        script.replace("SOLC_VERSION = '0.8.28'", "SOLC_VERSION = '0.8.99'")
    )
    result = subprocess.run(
        [node, str(fake / "compile.js"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"NODE_PATH": str(ROOT / "node_modules"), "PATH": str(Path(node).parent)},
    )
    assert result.returncode != 0
    assert "0.8.28+" in result.stderr and "pinned" in result.stderr
