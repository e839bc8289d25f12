"""PyTorch programs (``torch.export.save`` files, ``.pt2``) into Relax, weights bound as constants.

TVM 0.27's ``from_exported_program`` with ``keep_params_as_input=False`` leaves the weights on
the host, and a CUDA build then fails; a program exported in fp16 fails Relax's dtype checks.
So the weights come in as parameters and are bound as constants here (a CUDA build then uploads
them), and programs are taken in fp32: ``--fp16`` converts them, as it does ONNX models.

Loading a ``.pt2`` file runs no code from it, but it is read by torch's loader, so the API
server and the farm's coordinators never read one: they take ONNX models only. A client that
sends a ``.pt2`` program to the farm converts it to ONNX first, on its own machine
(``exported_program_as_onnx``), and says so.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tvm.ir import IRModule

from tunefarm.tuner.errors import ModelValidationError
from tunefarm.tuner.model_validation import DEFAULT_MAX_MODEL_BYTES, TensorSignature, ValidatedModel

SUFFIX = ".pt2"


def is_exported_program(path: Path) -> bool:
    return Path(path).suffix.lower() == SUFFIX


def validate_exported_program(
    path: Path, *, max_bytes: int = DEFAULT_MAX_MODEL_BYTES
) -> ValidatedModel:
    """Load ``path`` (``torch.export.save``); raise ``ModelValidationError`` if it is bad."""
    path = Path(path)
    if path.is_dir():
        raise ModelValidationError(f"{path}: a folder, not a model file")
    if not path.is_file():
        raise ModelValidationError(f"{path}: no such file")
    size = path.stat().st_size
    if size > max_bytes:
        raise ModelValidationError(f"{path}: {size} bytes is over the limit of {max_bytes} bytes")
    try:
        import torch
    except ImportError:
        raise ModelValidationError(
            f"{path}: a .pt2 program needs torch installed (pip install torch)"
        ) from None
    try:
        with warnings.catch_warnings(), _quiet("torch.export"):
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path))
    except Exception as err:
        raise ModelValidationError(
            f"{path}: not a torch.export program ({_first_line(err)})"
        ) from None
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    signature = program.graph_signature
    inputs = [
        _signature(path, name, placeholders[name].meta.get("val")) for name in signature.user_inputs
    ]
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    values = output_node.args[0] if isinstance(output_node.args[0], (list, tuple)) else []
    outputs = [
        _signature(
            path, getattr(value, "name", f"output{i}"), getattr(value, "meta", {}).get("val")
        )
        for i, value in enumerate(values)
    ]
    return ValidatedModel(
        path=path, model=None, opset=0, inputs=inputs, outputs=outputs, exported=program
    )


def import_exported_program(validated: ValidatedModel) -> IRModule:
    """The program as a Relax IRModule whose ``main`` takes the user inputs only."""
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    from tunefarm.tuner.clip_rewrites import clips_as_min_max

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = from_exported_program(
                validated.exported, keep_params_as_input=True, unwrap_unit_return_tuple=True
            )
        mod, params = relax.frontend.detach_params(mod)
        main = mod["main"]
        user_inputs = int(main.attrs["num_input"])
        weights = dict(zip(list(main.params)[user_inputs:], params.get("main", []), strict=True))
        return clips_as_min_max(relax.transform.BindParams("main", weights)(mod))
    except Exception as err:
        raise ModelValidationError(
            f"{validated.path}: TVM's PyTorch importer failed: {_first_line(err)}"
        ) from err


def exported_program_as_onnx(validated: ValidatedModel, out: Path) -> Path:
    """The program as an ONNX file at ``out``, for the farm, which takes ONNX only.

    TorchScript's exporter traces the program's module on zeros of its input shapes (the
    program was exported in eval mode, which the trace keeps). Its ONNX goes through TVM's ONNX
    importer on the farm, which converts fewer operators than the PyTorch importer of a local
    compile.
    """
    import torch

    assert validated.exported is not None
    example = tuple(
        torch.zeros(signature.shape, dtype=getattr(torch, signature.dtype))
        for signature in validated.inputs
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                validated.exported.module(),
                example,
                str(out),
                dynamo=False,
                input_names=[signature.name for signature in validated.inputs],
                # An exported program's module cannot be switched to eval(); it is eval already.
                training=torch.onnx.TrainingMode.PRESERVE,
                do_constant_folding=True,
            )
    except Exception as err:
        raise ModelValidationError(
            f"{validated.path}: cannot convert to ONNX for the farm ({_first_line(err)}); "
            "compile it locally instead"
        ) from None
    return out


def _signature(path: Path, name: str, value: Any) -> TensorSignature:
    shape = getattr(value, "shape", None)
    if shape is None:
        raise ModelValidationError(f"{path}: {name!r} is not a tensor")
    dims = []
    for dim in shape:
        if not isinstance(dim, int):
            raise ModelValidationError(
                f"{path}: {name!r} has a dynamic dimension ({dim}); export with static shapes"
            )
        dims.append(int(dim))
    return TensorSignature(name=name, shape=dims, dtype=str(value.dtype).removeprefix("torch."))


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """torch logs a failed load's traceback as a warning, then raises; the user gets our line."""
    logger = logging.getLogger(logger_name)
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
