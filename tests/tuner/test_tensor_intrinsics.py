"""Only the target's tensor intrinsics are registered, and ``inspect`` is left as it was."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_cuda_intrinsics_register_and_inspect_is_restored() -> None:
    # A fresh process: the intrinsics register once per process, and torch (loaded with
    # tvm_ffi when installed) is what made TVMScript's stack inspection slow (issue 16).
    script = textwrap.dedent(
        """
        import inspect, sys
        original = inspect.getmodule
        from tvm.target import Target
        from tunefarm.tuner.tensor_intrinsics import load_tensor_intrinsics
        load_tensor_intrinsics(Target({"kind": "cuda", "arch": "sm_90"}))
        from tvm.s_tir import TensorIntrin
        TensorIntrin.get("mma_ldmatrix_f16_a")  # raises if it was not registered
        print(inspect.getmodule is original, "tvm.s_tir.tensor_intrin.x86" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False"]
