"""Split-K sketches (``tuner.split_k``): which blocks get them, and that they build and replay.

The design spaces are generated and built for an sm_90 target here (nvcc compiles without a
GPU); whether a split sketch is faster is a measurement (``bench/split_k.py``), and its results
on a GPU are checked by the last two tests, skipped here.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
import tvm.s_tir.meta_schedule as ms
from tvm import te
from tvm.s_tir import Schedule

from tunefarm.tuner.model_validation import validate_onnx_model
from tunefarm.tuner.onnx_import import import_onnx
from tunefarm.tuner.pipelines import PipelineOptions, run_pipeline
from tunefarm.tuner.sample_models import conv_relu
from tunefarm.tuner.search import configured_search
from tunefarm.tuner.split_k import space_generator
from tunefarm.tuner.targets import parse_target
from tunefarm.tuner.tasks import extract_tuning_tasks
from tunefarm.tuner.tensor_intrinsics import load_tensor_intrinsics
from tunefarm.tuning_db import SqlDatabase

H100 = parse_target('{"kind": "cuda", "arch": "sm_90"}')
NVCC = shutil.which("nvcc")


def _matmul(m: int, k: int, n: int, out_dtype: str = "float32") -> tvm.IRModule:
    x = te.placeholder((m, k), "float16", name="x")
    w = te.placeholder((n, k), "float16", name="w")
    r = te.reduce_axis((0, k), "k")
    out = te.compute(
        (m, n),
        lambda i, j: te.sum(x[i, r].astype(out_dtype) * w[j, r].astype(out_dtype), axis=r),
        name="matmul",
    )
    return tvm.IRModule(
        {"main": te.create_prim_func([x, w, out]).with_attr("global_symbol", "main")}
    )


def _spaces(mod: tvm.IRModule, *, split_k: bool, seed: int = 0) -> list[Schedule]:
    load_tensor_intrinsics(H100)
    context = ms.TuneContext(
        mod=mod,
        target=H100,
        space_generator=space_generator(H100, split_k=split_k),
        search_strategy="replay-trace",
        task_name="task",
        rand_state=seed,
    ).clone()
    return list(context.generate_design_space())


def _split(space: Schedule) -> bool:
    return any(inst.kind.name == "RFactor" for inst in space.trace.insts)


def _factors(spaces: list[Schedule]) -> set[int]:
    """The split factors of the split sketches: the partial output's first extent."""
    found = (
        re.search(r"_rf = T.sblock_alloc_buffer\(\(T?\.?\w*\(?(\d+)", str(space.mod))
        for space in spaces
    )
    return {int(match.group(1)) for match in found if match}


def _tensor_core(space: Schedule) -> bool:
    return "wmma_sync" in str(space.trace)


def _anchor_task(tmp_path: Path, *, channels: int, size: int) -> tvm.IRModule:
    """The convolution task of a conv + bias + ReLU (``channels`` to ``channels``, 3x3) as our
    ``--fp16`` pipeline makes it."""
    path = tmp_path / "conv.onnx"
    onnx.save(conv_relu(channels=channels, size=size), str(path))
    mod = import_onnx(validate_onnx_model(path))
    piped = run_pipeline(mod, target=H100, options=PipelineOptions(fp16=True)).mod
    tasks = extract_tuning_tasks(piped, target=H100)
    return max(tasks, key=lambda task: task.flops).mod


def test_a_small_fp16_convolution_of_our_pipeline_gets_tensor_core_split_sketches(
    tmp_path: Path,
) -> None:
    # ResNet-50's last stage in miniature: 7x7 outputs, a reduction of 9 x 256.
    task = _anchor_task(tmp_path, channels=256, size=7)
    plain = _spaces(task, split_k=False)
    spaces = _spaces(task, split_k=True)
    split = [space for space in spaces if _split(space)]
    assert split, "no split-K sketch for a 7x7x256 fp16 convolution"
    assert all(_tensor_core(space) for space in split)
    # The usual sketches stay, one set more per split factor.
    assert len(spaces) > len(plain)
    assert sum(not _split(space) for space in spaces) == len(plain)


def test_large_outputs_short_reductions_and_cpu_targets_get_no_split() -> None:
    # BERT's FFN down-projection at sequence 128, summed in fp32 or (our --fp16) in fp16.
    assert any(_split(s) for s in _spaces(_matmul(128, 3072, 768), split_k=True))
    assert any(_split(s) for s in _spaces(_matmul(128, 3072, 768, "float16"), split_k=True))
    assert _factors(_spaces(_matmul(128, 3072, 768), split_k=True)) == {2, 4, 8}
    # 120 output tiles of 64x64: two splits are two waves of the SMs, more only add partials.
    assert _factors(_spaces(_matmul(128, 1024, 3840), split_k=True)) == {2}
    # 3136x2048 outputs fill the GPU without a split.
    assert not any(_split(s) for s in _spaces(_matmul(3136, 1152, 2048), split_k=True))
    # A short reduction leaves a split nothing to share.
    assert not any(_split(s) for s in _spaces(_matmul(128, 256, 768), split_k=True))
    # A split loop must divide by S and keep 16 a split: K = 516 takes 2 and 4, not 8.
    assert _factors(_spaces(_matmul(128, 516, 768), split_k=True)) == {2, 4}
    assert space_generator(parse_target("llvm"), split_k=True) == "post-order-apply"
    volta = parse_target('{"kind": "cuda", "arch": "sm_70"}')  # no tensor-core rules there
    assert space_generator(volta, split_k=True) == "post-order-apply"
    assert space_generator(parse_target('{"kind": "cuda", "arch": "sm_90a"}'), split_k=True) != (
        "post-order-apply"
    )
    assert space_generator(H100, split_k=False) == "post-order-apply"


def test_split_k_is_on_by_default_and_the_setting_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TUNEFARM_SEARCH_SPLIT_K", raising=False)
    assert configured_search().split_k is True
    assert any(
        _split(s) for s in _spaces(_matmul(128, 3072, 768), split_k=configured_search().split_k)
    )
    monkeypatch.setenv("TUNEFARM_SEARCH_SPLIT_K", "0")
    assert configured_search().split_k is False
    assert space_generator(H100, split_k=configured_search().split_k) == "post-order-apply"


def _built_split_sketch(mod: tvm.IRModule) -> tuple[Schedule, tvm.runtime.Module]:
    """A postprocessed split sketch that compiles (random sketches may exceed a GPU limit)."""
    for seed in range(24):
        context = ms.TuneContext(
            mod=mod,
            target=H100,
            space_generator=space_generator(H100, split_k=True),
            task_name="task",
            rand_state=seed,
        ).clone()
        for space in context.generate_design_space():
            if not _split(space):
                continue
            sch = space.copy()
            if not all(post.apply(sch) for post in context.space_generator.postprocs):
                continue
            try:
                return sch, tvm.compile(sch.mod, target=H100)
            except (tvm.error.InternalError, RuntimeError, ValueError):
                continue  # a sketch TVM cannot lower; the search counts it as a failed build
    raise AssertionError("no split-K sketch compiled in 24 seeds")


def test_the_epilogue_is_computed_by_the_thread_that_sums_the_splits(tmp_path: Path) -> None:
    task = _anchor_task(tmp_path, channels=256, size=7)
    split = [space for space in _spaces(task, split_k=True) if _split(space)]
    assert split
    for space in split:
        script = str(space.mod)
        # The sum's output lives in a register, and the epilogue (bias add, ReLU) reads it.
        assert "conv2d_nhwc_intermediate_local = T.sblock_alloc_buffer" in script
        epilogue = script[script.index('T.sblock("T_add")') :]
        assert "conv2d_nhwc_intermediate_local[" in epilogue


@pytest.mark.skipif(NVCC is None, reason="needs nvcc to compile CUDA")
def test_the_sum_of_the_splits_and_the_epilogue_are_one_kernel(tmp_path: Path) -> None:
    # conv + bias + ReLU: the partial convolutions are one kernel; the sum over the splits,
    # the bias and the ReLU the other (not a third for the epilogue).
    _, library = _built_split_sketch(_anchor_task(tmp_path, channels=256, size=7))
    source = library.mod.imports[0].inspect_source()
    kernels = set(re.findall(r"__global__ void __launch_bounds__\(\d+\) (\w+)\(", source))
    assert len(kernels) == 2, sorted(kernels)


@pytest.mark.skipif(NVCC is None, reason="needs nvcc to compile CUDA")
def test_a_split_sketch_compiles_and_replays_from_the_database(tmp_path: Path) -> None:
    mod = _matmul(128, 3072, 768)
    sch, _ = _built_split_sketch(mod)
    database = SqlDatabase(f"sqlite:///{tmp_path / 'tuning.db'}", target=H100)
    workload = database.commit_workload(mod)
    database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [1e-5], H100, None))
    # The split, reorder and rfactor survive the database's record format and replay.
    replayed = database.query_schedule(mod, H100, "task")
    assert replayed is not None
    tvm.ir.assert_structural_equal(replayed.mod, sch.mod)
    assert "matmul_rf" in str(replayed.mod)
    tvm.compile(replayed.mod, target=H100)


@pytest.mark.skipif(not tvm.cuda(0).exist, reason="needs a CUDA GPU")
def test_a_split_sketch_computes_the_product_on_the_gpu() -> None:
    mod = _matmul(128, 3072, 768)
    _, library = _built_split_sketch(mod)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 3072)).astype("float16")
    w = rng.standard_normal((768, 3072)).astype("float16")
    device = tvm.cuda(0)
    out = tvm.runtime.empty((128, 768), "float32", device)
    library["main"](tvm.runtime.tensor(x, device), tvm.runtime.tensor(w, device), out)
    expected = x.astype(np.float32) @ w.astype(np.float32).T
    np.testing.assert_allclose(out.numpy(), expected, rtol=2e-3, atol=2e-2)


@pytest.mark.skipif(not tvm.cuda(0).exist, reason="needs a CUDA GPU")
def test_a_split_convolution_with_its_epilogue_computes_on_the_gpu(tmp_path: Path) -> None:
    task = _anchor_task(tmp_path, channels=256, size=7)
    _, library = _built_split_sketch(task)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((1, 7, 7, 256)) * 0.5).astype("float16")
    w = (rng.standard_normal((256, 3, 3, 256)) * 0.05).astype("float16")
    b = rng.standard_normal((1, 1, 1, 256)).astype("float16")
    padded = np.pad(x.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = np.stack(
        [padded[:, i : i + 7, j : j + 7, :] for i in range(3) for j in range(3)], axis=3
    )  # (1, 7, 7, 9, 256): the 3x3 window of each output, row-major as w's (kh, kw)
    conv = np.einsum("nhwkc,fkc->nhwf", windows, w.astype(np.float32).reshape(256, 9, 256))
    expected = np.maximum(conv + b.astype(np.float32), 0)
    device = tvm.cuda(0)
    out = tvm.runtime.empty((1, 7, 7, 256), "float16", device)
    args = [tvm.runtime.tensor(a, device) for a in (x, w, b)]
    library["main"](*args, out)
    np.testing.assert_allclose(out.numpy().astype(np.float32), expected, rtol=2e-2, atol=0.1)
