"""Queue names. One measure queue per kind of hardware, so a trial is timed where it will run.

``measure.cuda.sm_90`` for GPUs; ``measure.llvm.x86_64.znver5`` for CPUs. The CPU name is part
of the key because records are filed under the target's CPU features: a schedule timed on a
Skylake says little about a Zen 5.
"""

from __future__ import annotations

import platform

from tvm.target import Target

JOBS_QUEUE = "jobs"


def measure_queue(target: Target) -> str:
    kind = target.kind.name
    if kind == "cuda":
        return f"measure.cuda.{target.attrs.get('arch', 'unknown')}"
    if kind == "llvm":
        arch = str(target.attrs.get("mtriple", "") or platform.machine()).split("-")[0]
        return f"measure.llvm.{arch}.{target.attrs.get('mcpu', 'generic')}"
    return f"measure.{kind}"
