"""A tuning record as plain JSON, for every trace MetaSchedule writes.

``TuningRecord.as_json()`` fails on traces that hold TVM objects other than numbers, strings
and containers: the tensor-core rules' ``TransformLayout`` carries an ``IndexMap``, so every
fp16 GPU record would be lost. Such objects are written as ``tvm.ir.save_json`` text, which is
what MetaSchedule's own ``JSONDatabase`` writes, and what ``TuningRecord.from_json`` reads back.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm.ir import Array, Map
from tvm.s_tir.meta_schedule import _ffi_api
from tvm.s_tir.meta_schedule.database import TuningRecord
from tvm.tirx import FloatImm, IntImm

from tunefarm.tuning_db.tvmscript_import import getmodule_remembers_misses


def record_as_json(record: TuningRecord) -> list[Any]:
    """``[trace, run_secs, target, args_info]`` as Python lists, dicts, numbers and strings."""
    converted = _plain(_ffi_api.TuningRecordAsJSON(record))  # type: ignore[attr-defined]
    assert isinstance(converted, list)
    return converted


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, IntImm | FloatImm):
        return value.value
    if isinstance(value, Array):
        return [_plain(item) for item in value]
    if isinstance(value, Map):
        return {_plain(key): _plain(item) for key, item in value.items()}
    return tvm.ir.save_json(value)


def register_intrinsics_for(trace_text: str) -> None:
    """Parsing a trace that tensorizes looks its tensor intrinsics up by name; register them.

    The import takes seconds, so it happens only once a record needs it.
    """
    if "Tensorize" in trace_text:
        with getmodule_remembers_misses():
            import tvm.s_tir.tensor_intrin  # noqa: F401
