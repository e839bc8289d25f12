"""From an ONNX file (or a ``torch.export`` program, ``.pt2``) to MetaSchedule's tasks: validate,
import into Relax, run the pass pipeline, extract the tasks. A job does it before tuning;
``tunefarm plan`` and the API's coverage do only this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tvm.target import Target

from tunefarm.tuner.import_guard import probe_import
from tunefarm.tuner.model_validation import (
    DEFAULT_MAX_MODEL_BYTES,
    ValidatedModel,
    validate_onnx_model,
)
from tunefarm.tuner.onnx_import import import_onnx
from tunefarm.tuner.pipelines import Layout, PipelineOptions, PipelineResult, run_pipeline
from tunefarm.tuner.settings import Settings
from tunefarm.tuner.tasks import TuningTask, extract_tuning_tasks
from tunefarm.tuner.torch_import import (
    import_exported_program,
    is_exported_program,
    validate_exported_program,
)
from tunefarm.tuner.vendor_kernels import VendorSelect


@dataclass
class AnalysedModel:
    validated: ValidatedModel
    pipeline: PipelineResult
    tasks: list[TuningTask]
    """Heaviest first."""


def analyse_model(
    path: Path,
    *,
    target: Target,
    layout: Layout = "auto",
    fp16: bool = False,
    vendor_kernels: bool = False,
    vendor_select: VendorSelect | None = None,
    tf32: bool = False,
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    on_step: Callable[[str], None] | None = None,
    guard_import: bool = True,
) -> AnalysedModel:
    """The model's tasks for ``target``; raises ``UserInputError`` for a bad model.

    ``guard_import``: try an ONNX import in a limited child first (``import_guard``); off
    where the caller is such a child already."""
    step = on_step or (lambda message: None)
    step(f"validating {path}")
    if is_exported_program(path):
        validated = validate_exported_program(path, max_bytes=max_bytes)
        step("importing into Relax")
        relax_mod = import_exported_program(validated)
    else:
        validated = validate_onnx_model(path, max_bytes=max_bytes)
        step("importing into Relax")
        if guard_import:
            # Tried first where running out of memory or time harms nobody (issue 21).
            settings = Settings()
            probe_import(
                validated,
                memory_bytes=settings.import_memory_bytes,
                seconds=settings.import_timeout_sec,
            )
        relax_mod = import_onnx(validated)
    step("running the pass pipeline")
    pipeline = run_pipeline(
        relax_mod,
        target=target,
        options=PipelineOptions(
            layout=layout,
            fp16=fp16,
            vendor_kernels=vendor_kernels,
            vendor_select=vendor_select,
            tf32=tf32,
        ),
    )
    return AnalysedModel(
        validated=validated,
        pipeline=pipeline,
        tasks=extract_tuning_tasks(pipeline.mod, target=target),
    )
