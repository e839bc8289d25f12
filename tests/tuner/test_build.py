"""Two builds of one model at once (the library and its graph-free twin for the in-model
profile run side by side on the GPU host): each must give the library a build alone gives."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from tunefarm.tuner import build
from tunefarm.tuner.model_analysis import analyse_model
from tunefarm.tuner.sample_models import write_sample
from tunefarm.tuner.targets import parse_target
from tunefarm.tuning_db import SqlDatabase


def _run(executable: relax.VMExecutable, inputs: list[np.ndarray]) -> np.ndarray:
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(array) for array in inputs])
    return np.asarray(out.numpy())


def test_two_builds_in_threads_match_one_alone(tmp_path: Path) -> None:
    target = parse_target("llvm")
    model = write_sample("tiny-cnn", tmp_path / "tiny_cnn.onnx")
    analysed = analyse_model(model, target=target, layout="nchw")
    database = SqlDatabase(f"sqlite:///{tmp_path / 'records.db'}", target=target)
    mod = analysed.pipeline.mod

    alone = build.compile_tuned(mod, target=target, database=database)
    with ThreadPoolExecutor(max_workers=2) as pool:
        builds = [
            pool.submit(build.compile_tuned, mod, target=target, database=database)
            for _ in range(2)
        ]
        together = [future.result(timeout=600) for future in builds]

    rng = np.random.default_rng(0)
    inputs = [
        rng.standard_normal(spec.shape).astype(spec.dtype) for spec in analysed.validated.inputs
    ]
    expected = _run(alone, inputs)
    for executable in together:
        np.testing.assert_allclose(_run(executable, inputs), expected, rtol=1e-5, atol=1e-5)
