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
        arrays = [self._checked(value, spec) for value, spec in pairs]
        outputs: list[Any] = self._model.run(arrays)
        if as_torch:
            import torch

            outputs = [torch.from_numpy(np.ascontiguousarray(array)) for array in outputs]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def save(self, directory: str | Path) -> Path:
        """Copy ``model.so`` and ``manifest.json`` into ``directory``; return it."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if out.resolve() != self.directory.resolve():
            for name in (LIBRARY, MANIFEST):
                shutil.copyfile(self.directory / name, out / name)
        return out

    def _checked(self, value: Any, spec: tuple[str, list[int], str]) -> np.ndarray:
        name, shape, dtype = spec
        if _is_torch_tensor(value):
            value = value.detach().cpu().numpy()
        array = np.asarray(value)
        if list(array.shape) != shape:
            raise TunefarmError(
                f"input {name!r} has shape {list(array.shape)}; the model takes {shape}"
            )
        if array.dtype != np.dtype(dtype):
            raise TunefarmError(f"input {name!r} is {array.dtype}; the model takes {dtype}")
        return np.ascontiguousarray(array)


def load(directory: str | Path) -> CompiledModel:
    """Load a library that ``compile`` or ``tunefarm compile`` wrote (model.so + manifest.json)."""
    return CompiledModel(Path(directory))


def _is_torch_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # a torch tensor means torch is imported already
    return torch is not None and isinstance(value, torch.Tensor)


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
