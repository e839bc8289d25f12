"""Workload keys that are the same on every process and machine.

TVM's structural hash is not stable across platforms, and the TVMScript of a workload carries the
names of its parameters, which come from wherever the operator sat in the model (``lv4``, ``x``).
The key is the sha256 of the TVMScript after every parameter of every PrimFunc is renamed by its
position, so the same operator with the same shapes gets the same key in any model.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import tvm
from tvm.ir import IRModule


def canonical_script(mod: IRModule) -> str:
    """The TVMScript of ``mod`` with PrimFunc parameters renamed to ``p0, p1, ...``."""
    graph = json.loads(tvm.ir.save_json(mod))
    nodes: list[dict[str, Any]] = graph["nodes"]
    for node in list(nodes):
        if node.get("type") != "tirx.PrimFunc":
            continue
        params = nodes[node["data"]["params"]]["data"]
        for position, var_index in enumerate(params):
            var = nodes[var_index]
            if "name" in var.get("data", {}):
                # New string nodes: the old ones may be shared with other names.
                nodes.append({"type": "ffi.String", "data": f"p{position}"})
                var["data"]["name"] = len(nodes) - 1
    canonical = tvm.ir.load_json(json.dumps(graph))
    return str(canonical.script(show_meta=True))


def workload_key(mod: IRModule) -> str:
    """The stable key of a workload module: sha256 hex of its canonical TVMScript."""
    return hashlib.sha256(canonical_script(mod).encode()).hexdigest()
