"""Custom schedule rules that TOPI asks for and TVM 0.27 does not ship.

TOPI annotates pooling blocks with ``schedule_rule = "meta_schedule.pool_max"`` (and
``pool_avg``, ``adaptive_pool_*``). MetaSchedule's ``ApplyCustomRule`` looks for
``s_tir.meta_schedule.<target key>.<rule>``, finds none, logs a multi-line C++ warning on every
task and every search, removes the annotation and carries on with the generic rules. Registering
a rule that does exactly that keeps the schedules identical and the console quiet.
"""

from __future__ import annotations

import tvm_ffi
from tvm.s_tir.schedule import SBlockRV, Schedule

_RULES = ("pool_max", "pool_avg", "adaptive_pool_max", "adaptive_pool_avg")
_TARGET_KEYS = ("cpu", "cuda")


def _leave_to_generic_rules(sch: Schedule, block: SBlockRV) -> list[Schedule]:
    sch.unannotate(block, "schedule_rule")
    return [sch]


def register_pooling_rules() -> None:
    """Register the pass-through rules once per process (TVM's own, if any, stay)."""
    for key in _TARGET_KEYS:
        for rule in _RULES:
            name = f"s_tir.meta_schedule.{key}.meta_schedule.{rule}"
            if tvm_ffi.get_global_func(name, allow_missing=True) is None:
                tvm_ffi.register_global_func(name, _leave_to_generic_rules)
