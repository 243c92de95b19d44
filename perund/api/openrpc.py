"""The OpenRPC document of the API (`rpc.discover`), built from the method descriptions.

It shows the very schemas the dispatcher validates params against, plus each method's errors
and who may call it (`x-perund-access`, see docs/security.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from perund import __version__
from perund.api.method_spec import Method
from perund.api.schema import Schema, obj

OPENRPC_VERSION = "1.2.6"

def params_schema(method: Method) -> Schema:
    """The object schema of a method's params by name (what the dispatcher validates)."""
    return obj({p.name: p.schema for p in method.params},
               [p.name for p in method.params if p.required])


def openrpc_document(methods: Sequence[Method], *, title: str = "perund",
                     description: str = "") -> dict[str, Any]:
    """The OpenRPC 1.x document describing `methods`: params, results and errors."""
    entries = []
    for method in sorted(methods, key=lambda m: m.name):
        entry: dict[str, Any] = {
            "name": method.name,
            "summary": method.summary,
            "paramStructure": "either",
            "params": [
                {"name": p.name, "required": p.required, "schema": p.schema,
                 **({"description": p.description} if p.description else {})}
                for p in method.params
            ],
            "result": {"name": method.result_name, "schema": method.result},
        }
        if method.description:
            entry["description"] = method.description
        errors = [{"code": -32602, "message": "Invalid params"}]
        errors += [{"code": e.code, "message": e.__name__} for e in method.errors]
        entry["errors"] = errors
        entry["x-perund-access"] = method.access.value
        entries.append(entry)
    return {
        "openrpc": OPENRPC_VERSION,
        "info": {"title": title, "version": __version__,
                 **({"description": description} if description else {})},
        "methods": entries,
    }
