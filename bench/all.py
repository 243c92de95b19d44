"""Run every benchmark and print their figures as one JSON object, keyed by benchmark.

Run: `make bench` (or `.venv/bin/python bench/all.py [--only NAME ...]`). Each benchmark runs in
its own process with its default sizes, one after another (they would skew each other if run
together on a small machine); a failing one is reported with its exit status and the tail of
its error output, and the others still run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("gas", "storage", "offchain", "virtual", "api", "memory", "retired", "restart")


def run_one(name: str) -> dict[str, Any]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(HERE / f"{name}.py")], capture_output=True,
                          text=True, cwd=HERE.parent)
    elapsed = round(time.monotonic() - start, 1)
    if done.returncode != 0:
        return {"failed": done.returncode, "stderr": done.stderr[-2000:], "seconds": elapsed}
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        return {"failed": "its output is not JSON", "stdout": done.stdout[-2000:],
                "seconds": elapsed}
    result["seconds"] = elapsed
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    args = parser.parse_args()
    results = {}
    for name in args.only:
        print(f"running bench/{name}.py", file=sys.stderr, flush=True)
        results[name] = run_one(name)
    json.dump(results, sys.stdout, indent=1)
    print()
    if any("failed" in r for r in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
