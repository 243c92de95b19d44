"""The compiled Adjudicator, loaded from the package data in `perund/chain/artifacts/`."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from perund.errors import InvalidContracts

ADJUDICATOR = "Adjudicator"


def _hex_bytes(text: str) -> bytes:
    return bytes.fromhex(text[2:] if text.startswith(("0x", "0X")) else text)


@dataclass(frozen=True, slots=True)
class ContractArtifact:
    """One contract's ABI and code, as `contracts/compile.js` wrote them."""

    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: bytes
    """The creation code (constructor included) that a deployment sends."""
    deployed_bytecode: bytes
    """The runtime code a correct deployment holds; `validate_adjudicator` compares to it."""
    immutable_ranges: tuple[tuple[int, int], ...] = ()
    """(start, length) byte ranges of the runtime code the constructor fills in, if any."""

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ContractArtifact:
        """Build from the artifact's JSON object; InvalidContracts when a key is missing."""
        try:
            ranges: list[tuple[int, int]] = []
            for refs in (document.get("immutableReferences") or {}).values():
                ranges.extend((int(ref["start"]), int(ref["length"])) for ref in refs)
            return cls(
                name=str(document["contractName"]),
                abi=tuple(document["abi"]),
                bytecode=_hex_bytes(document["bytecode"]),
                deployed_bytecode=_hex_bytes(document["deployedBytecode"]),
                immutable_ranges=tuple(sorted(ranges)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidContracts(
                f"the contract artifact is malformed: {exc!r}",
                name=str(document.get("contractName", "?")),
                address=None,
                error="malformed artifact",
            ) from exc

    def runtime_code_matches(self, code: bytes) -> bool:
        """Whether deployed `code` is this artifact's runtime code, immutables aside."""
        expected = self.deployed_bytecode
        if len(code) != len(expected):
            return False
        if not self.immutable_ranges:
            return code == expected
        masked_code, masked_expected = bytearray(code), bytearray(expected)
        for start, length in self.immutable_ranges:
            masked_code[start : start + length] = bytes(length)
            masked_expected[start : start + length] = bytes(length)
        return masked_code == masked_expected


@functools.cache
def load_artifact(name: str = ADJUDICATOR) -> ContractArtifact:
    """The packaged artifact `name`; InvalidContracts when it is missing (run `make compile`)."""
    resource = resources.files("perund.chain").joinpath("artifacts").joinpath(f"{name}.json")
    try:
        document = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidContracts(
            f"cannot read the {name} artifact ({exc}); run `make compile`",
            name=name,
            address=None,
            error="artifact missing",
        ) from exc
    return ContractArtifact.from_json(document)
