"""tunefarm from Python: compile a model into a library you call like the model.

import tunefarm
compiled = tunefarm.compile("model.onnx", target="llvm", trials=64)
outputs = compiled(image)          # numpy arrays (or torch tensors) in, the same kind out
compiled.manifest                  # the manifest the CLI writes
compiled.save("build/")            # model.so + manifest.json
again = tunefarm.load("build/")
"""

from tunefarm.compile_model import compile
from tunefarm.compiled_model import CompiledModel, load
from tunefarm.errors import TunefarmError

__all__ = ["CompiledModel", "TunefarmError", "compile", "load"]
