"""A compiled library behind a Python call: the model's inputs in, its outputs out."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tunefarm.errors import TunefarmError

LIBRARY = "model.so"
MANIFEST = "manifest.json"
TVM_ALIGNMENT = 64


class CompiledModel:
    """``model.so`` and its ``manifest.json``, loaded once into a Relax VM."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        library, manifest = self.directory / LIBRARY, self.directory / MANIFEST
        if not library.is_file() or not manifest.is_file():
            raise TunefarmError(f"{self.directory}: no {LIBRARY} and {MANIFEST} here")
        try:
            self.manifest: dict[str, Any] = json.loads(manifest.read_text())
            self._inputs = [
                (str(i["name"]), list(i["shape"]), str(i["dtype"])) for i in self.manifest["inputs"]
            ]
        except (ValueError, KeyError, TypeError) as err:
            raise TunefarmError(f"{manifest}: not a tunefarm manifest ({err})") from None
        from tunefarm.tuner.latency import LoadedModel
        from tunefarm.tuner.targets import parse_target

        self.target = parse_target(self.manifest["target"]["requested"])
        import tvm

        try:
            needed = self.manifest.get("library", {}).get("runtime_libraries")
            if needed:
                from tunefarm.tuner.vendor_kernels import preload_runtime_libraries

                preload_runtime_libraries([str(name) for name in needed])
            self._model = LoadedModel(tvm.runtime.load_module(str(library)), target=self.target)
        except Exception as err:
            raise TunefarmError(f"{library}: cannot be loaded here ({_first_line(err)})") from None

    @property
    def input_names(self) -> list[str]:
        return [name for name, _, _ in self._inputs]

    def __call__(self, *inputs: Any) -> Any:
        """Run the model: one array per input, in order; numpy or torch tensors.

        Returns one output as it is, several as a tuple, of the kind the inputs were.
        """
        if len(inputs) != len(self._inputs):
            raise TunefarmError(
                f"the model takes {len(self._inputs)} input(s) ({', '.join(self.input_names)}), "
                f"not {len(inputs)}"
            )
        as_torch = any(_is_torch_tensor(value) for value in inputs)
        pairs = zip(inputs, self._inputs, strict=True)
        args = [self._argument(value, spec) for value, spec in pairs]
        outputs = self._model.call(args)
        if as_torch:
            import torch

            # DLPack: the torch tensors share the library's output memory, on its device.
            results: list[Any] = [torch.from_dlpack(tensor) for tensor in outputs]
        else:
            results = [tensor.numpy() for tensor in outputs]
        return results[0] if len(results) == 1 else tuple(results)

    def save(self, directory: str | Path) -> Path:
        """Copy ``model.so`` and ``manifest.json`` into ``directory``; return it."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if out.resolve() != self.directory.resolve():
            for name in (LIBRARY, MANIFEST):
                shutil.copyfile(self.directory / name, out / name)
        return out

    def _argument(self, value: Any, spec: tuple[str, list[int], str]) -> Any:
        """``value`` as a tensor on the library's device. A contiguous torch tensor already
        there is passed without a copy (DLPack); anything else is copied once."""
        import tvm

        name, shape, dtype = spec
        if _is_torch_tensor(value):
            found_shape, found_dtype = list(value.shape), str(value.dtype).removeprefix("torch.")
        else:
            value = np.asarray(value)
            found_shape, found_dtype = list(value.shape), str(value.dtype)
        if found_shape != shape:
            raise TunefarmError(f"input {name!r} has shape {found_shape}; the model takes {shape}")
        if found_dtype != dtype:
            raise TunefarmError(f"input {name!r} is {found_dtype}; the model takes {dtype}")
        device = self._model.device
        if _is_torch_tensor(value):
            if value.requires_grad:
                value = value.detach()
            # TVM's kernels assume 64-byte aligned buffers (torch's own allocations are; a
            # tensor made from a numpy array or a slice may not be).
            if (
                _torch_device_is(value, device)
                and value.is_contiguous()
                and value.data_ptr() % TVM_ALIGNMENT == 0
            ):
                return tvm.runtime.from_dlpack(value)
            value = value.cpu().numpy()
        return tvm.runtime.tensor(np.ascontiguousarray(value), device=device)


def load(directory: str | Path) -> CompiledModel:
    """Load a library that ``compile`` or ``tunefarm compile`` wrote (model.so + manifest.json)."""
    return CompiledModel(Path(directory))


def _is_torch_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # a torch tensor means torch is imported already
    return torch is not None and isinstance(value, torch.Tensor)


def _torch_device_is(tensor: Any, device: Any) -> bool:
    """Whether the torch tensor sits on the TVM device (a CPU, or the same CUDA GPU)."""
    kind = {1: "cpu", 2: "cuda"}.get(int(device.dlpack_device_type()))
    if tensor.device.type != kind:
        return False
    return kind == "cpu" or tensor.device.index == device.index


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
