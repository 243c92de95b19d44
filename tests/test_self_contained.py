"""The repository stands on its own: no import circle among perund's modules, and no code or
document cites a file outside it (the specification is docs/specification.md, the design
conventions docs/conventions.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "perund"
OUTSIDE = re.compile(r"\b(PROTOCOL|DESIGN|API)\.md\b|\.\./shared/")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    wanted = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                wanted.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            wanted.update(alias.name for alias in node.names)
    return {name for name in wanted if name in modules}


def test_no_import_circle_in_perund() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done

    def walk(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                circle = [*path[path.index(target):], target] if target in path else [target]
                raise AssertionError("import circle: " + " -> ".join([*circle, name]))
            if target not in state:
                walk(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])


def test_nothing_cites_a_file_outside_the_repository() -> None:
    cited = []
    for folder in ("perund", "docs", "tests", "bench", "contracts", "twisted", "etc"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".md", ".sol", ".yaml", ".cfg", ".toml"} \
                    and "node_modules" not in path.parts and path != Path(__file__):
                for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if OUTSIDE.search(line):
                        cited.append(f"{path.relative_to(ROOT)}:{number}")
    for name in ("README.md", "Makefile", "setup.cfg", "pyproject.toml"):
        text = (ROOT / name).read_text()
        cited += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1)
                  if OUTSIDE.search(line)]
    assert cited == []
