"""YAML loading that notices keys defined twice.

PyYAML's safe loader keeps the last of two equal keys without a word. In a contacts file that
silently drops a peer (two entries `bob:`), and in a session file it silently replaces a value,
so our config readers load through this loader and report each repeat as a problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from perund.errors import InvalidConfig
from perund.safe_files import FileRules

_MERGE_TAG = "tag:yaml.org,2002:merge"
_LONG_HEX = re.compile(r"^0[xX][0-9a-fA-F]{40,}$")


@dataclass(frozen=True, slots=True)
class DuplicateKey:
    """A key that appears twice in one mapping: its value and both line numbers (from 1)."""

    key: object
    first_line: int
    line: int
    depth: int
    """0 for the document's top-level mapping, 1 for a mapping inside it, and so on."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that records repeated keys instead of letting the last one win silently."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[DuplicateKey] = []
        self._depths: dict[int, int] = {}
        # PyYAML's stubs leave these methods untyped; call them through Any.
        self._untyped: Any = self

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        depth = self._depths.get(id(node), 0)
        seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            if isinstance(value_node, yaml.MappingNode):
                self._depths[id(value_node)] = depth + 1
            if key_node.tag == _MERGE_TAG:
                # `<<: *base` keys are meant to be overridden by explicit ones.
                continue
            try:
                key = self._untyped.construct_object(key_node, deep=True)
                hash(key)
            except (TypeError, yaml.YAMLError):
                continue  # the base constructor reports unhashable keys itself
            line = key_node.start_mark.line + 1
            if key in seen:
                self.duplicates.append(DuplicateKey(key, seen[key], line, depth))
            else:
                seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_long_hex(self, node: yaml.ScalarNode) -> object:
        """Unquoted `0x` + 40 or more hex digits stay text: addresses and hashes, not integers.

        YAML 1.1 reads `0xab...` as an int, which would turn an unquoted address into a number
        (and its checksum casing would be lost).
        """
        text = str(self.construct_scalar(node))
        if _LONG_HEX.match(text):
            return text
        return self.construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_long_hex)


def load_yaml(text: str) -> tuple[object, list[DuplicateKey]]:
    """Parse one YAML document safely; also return every key that is defined twice.

    Raises `yaml.YAMLError` for text that is not YAML.
    """
    loader = _Loader(text)
    try:
        document = loader.get_single_data()
    finally:
        loader._untyped.dispose()
    return document, loader.duplicates


def read_yaml_file(path: Path, *, what: str, field: str,
                   rules: FileRules | None = None) -> tuple[object, list[DuplicateKey]]:
    """Read and parse a config file under `rules`: its document and the keys it defines twice.

    Every way the file itself can be wrong (not allowed, not a small regular file, not UTF-8,
    not YAML) is one InvalidConfig saying `what` the file is and naming `field`, the setting
    that points to it, in one line that quotes nothing of the file.
    """
    text = (rules or FileRules()).read_text(path, field, what)
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        where, problem = yaml_problem(exc)
        raise InvalidConfig(f"{what} {path} is not valid YAML: {where}{problem}",
                            name=field, value=str(path), requirement="valid YAML",
                            file=str(path)) from None


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_SYNTAX = re.compile(r"^[,\[\]{}:\-?|>&*!%@#`]{1,3}$|^<[a-z ]+>$|^\\[a-z]$")
"""What PyYAML quotes that is grammar, not content: punctuation, `<stream end>`, `\\t`."""


def _unquote(match: re.Match[str]) -> str:
    quoted = match.group(0)
    return quoted if _SYNTAX.match(quoted[1:-1]) else "…"


def yaml_problem(exc: yaml.YAMLError) -> tuple[str, str]:
    """`("line L, column C: ", what is wrong)` for a PyYAML error, without the file's text:
    PyYAML's own message shows the offending line and quotes characters of it, which could be
    a secret of a file that was never meant to be read as a config."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or "malformed"
    return where, _QUOTED.sub(_unquote, str(problem))
