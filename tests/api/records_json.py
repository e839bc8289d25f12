"""MetaSchedule JSON documents (the body of /v1/records/import) built from small workloads."""

from __future__ import annotations

from typing import Any

from tvm.s_tir.meta_schedule.database import Workload
from tvm.target import Target

from tests.tuning_db.workloads import matmul, record

LLVM = Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 2})


def matmul_document(*, factors: tuple[int, ...] = (4,), run_sec: float = 1e-3) -> dict[str, Any]:
    mod = matmul()
    workload = Workload(mod)
    lines = []
    for factor in factors:
        trace, _run_secs, target, args_info = record(
            mod, workload, LLVM, factor=factor, run_secs=[run_sec]
        ).as_json()
        lines.append([0, [trace, [run_sec], target, args_info]])
    return {"workloads": [list(workload.as_json())], "records": lines}
