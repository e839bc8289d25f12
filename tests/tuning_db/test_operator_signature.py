"""Operator signatures and target classes: pure functions, no database."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import tvm
from tvm import te, topi
from tvm.ir import IRModule

from tests.tuning_db.workloads import conv2d, dense, matmul
from tunefarm.tuning_db.operator_signature import (
    OperatorSignature,
    max_size_gap,
    operator_signature,
    shape_distance,
)
from tunefarm.tuning_db.target_fingerprint import fingerprint, target_class


def _module(*tensors: te.Tensor) -> IRModule:
    func = te.create_prim_func(list(tensors)).with_attr("global_symbol", "main")
    return IRModule({"main": func})


def test_conv2d_of_two_shapes_share_a_family_and_distance_grows_with_the_difference() -> None:
    base = operator_signature(conv2d(channels=16, size=32, filters=32))
    wider = operator_signature(conv2d(channels=16, size=32, filters=64))
    wider_and_larger = operator_signature(conv2d(channels=32, size=64, filters=64))
    assert base.kind == "conv" and base.layout == "NCHW" and base.roles == "SSSSRRR"
    assert base.shape == (1, 32, 32, 32, 16, 3, 3)
    assert base.family_key == wider.family_key == wider_and_larger.family_key
    assert shape_distance(base, base) == 0.0
    assert shape_distance(base, wider) == pytest.approx(1.0)  # one axis twice as long
    # Filters x2, height x2, width x2, input channels x2: sqrt(4) = 2.
    assert shape_distance(base, wider_and_larger) == pytest.approx(2.0)
    assert shape_distance(base, wider) == shape_distance(wider, base)


def test_a_stride_difference_adds_to_the_distance() -> None:
    stride_1 = operator_signature(conv2d(size=32))
    stride_2 = operator_signature(conv2d(size=64, stride=2))  # the same output size
    assert stride_1.family_key == stride_2.family_key
    assert stride_1.shape == stride_2.shape
    assert stride_2.strides == (2, 2)
    assert shape_distance(stride_1, stride_2) == pytest.approx(2.0)


def test_dense_and_conv2d_are_different_families() -> None:
    conv = operator_signature(conv2d())
    fc = operator_signature(dense())
    assert fc.kind == "dense" and fc.layout == "NT" and fc.roles == "SSR"
    assert conv.family_key != fc.family_key
    assert math.isinf(shape_distance(conv, fc))


def test_a_fused_conv2d_relu_is_not_in_the_bare_conv2d_family() -> None:
    # A trace finds its blocks by name: the relu block of one has no match in the other.
    bare = operator_signature(conv2d())
    fused = operator_signature(conv2d(relu=True))
    assert bare.shape == fused.shape
    assert [block.name for block in fused.blocks] == ["pad_temp", "conv2d_nchw", "compute"]
    assert math.isinf(shape_distance(bare, fused))


def test_kinds_and_layouts_of_topi_operators() -> None:
    a3 = te.placeholder((4, 32, 64), name="a")
    b3 = te.placeholder((4, 48, 64), name="b")
    data = te.placeholder((1, 32, 28, 28), name="data")
    depthwise_weight = te.placeholder((32, 1, 3, 3), name="weight")
    nhwc_data = te.placeholder((1, 28, 28, 16), name="data")
    hwio_weight = te.placeholder((3, 3, 16, 32), name="weight")
    cases = {
        "batch_matmul": _module(a3, b3, topi.nn.batch_matmul(a3, b3)),
        "depthwise_conv": _module(
            data,
            depthwise_weight,
            topi.nn.depthwise_conv2d_nchw(data, depthwise_weight, 1, 1, 1),
        ),
        "pool": _module(
            data, topi.nn.pool2d(data, (2, 2), (2, 2), (1, 1), (0, 0, 0, 0), "max", layout="NCHW")
        ),
        "reduce": _module(data, topi.sum(data, axis=(2, 3))),
        "injective": _module(data, topi.nn.relu(data)),
        "conv": _module(
            nhwc_data, hwio_weight, topi.nn.conv2d_nhwc(nhwc_data, hwio_weight, 1, 1, 1)
        ),
        "dense": matmul(),
    }
    signatures = {kind: operator_signature(mod) for kind, mod in cases.items()}
    assert {kind: s.kind for kind, s in signatures.items()} == {kind: kind for kind in cases}
    assert signatures["conv"].layout == "NHWC"
    assert signatures["pool"].layout == "NCHW"
    assert signatures["depthwise_conv"].roles == "SSSSRR"
    assert signatures["dense"].layout == "NN"  # te's matmul reads B[k, j]
    assert signatures["batch_matmul"].shape == (4, 32, 48, 64)


def test_signature_json_round_trips() -> None:
    signature = operator_signature(conv2d(stride=2))
    again = OperatorSignature.from_json(signature.as_json())
    assert again == signature
    assert again.family_key == signature.family_key


def test_the_size_gap_bounds_the_distance() -> None:
    # The similarity index stops reading once the size gap alone rules out nearer rows.
    shapes = [
        conv2d(channels=c, size=s, filters=f, kernel=k)
        for c, s, f, k in itertools.product((8, 24), (14, 32), (16, 48), (1, 3))
    ]
    signatures = [operator_signature(mod) for mod in shapes]
    for a, b in itertools.combinations(signatures, 2):
        distance = shape_distance(a, b)
        if math.isfinite(distance):
            assert abs(a.size_log2 - b.size_log2) <= max_size_gap(a, distance) + 1e-9


@pytest.mark.parametrize("target_text", ["llvm", "cuda -arch=sm_90"])
def test_signatures_of_real_tasks(target_text: str, tiny_cnn_path: Path) -> None:
    from tunefarm.tuner.model_validation import validate_onnx_model
    from tunefarm.tuner.onnx_import import import_onnx
    from tunefarm.tuner.pipelines import PipelineOptions, run_pipeline
    from tunefarm.tuner.targets import parse_target
    from tunefarm.tuner.tasks import extract_tuning_tasks

    target = parse_target(target_text)
    pipeline = run_pipeline(
        import_onnx(validate_onnx_model(tiny_cnn_path)), target=target, options=PipelineOptions()
    )
    kinds = {}
    for task in extract_tuning_tasks(pipeline.mod, target=target):
        signature = operator_signature(task.mod)
        kinds[task.name] = (signature.kind, signature.layout)
    layout = "NHWC"  # the pipeline's auto layout, on CPUs and GPUs
    assert kinds["fused_conv2d_add_relu"] == ("conv", layout)
    assert kinds["max_pool2d"] == ("pool", layout)
    assert kinds["fused_matmul_add1"] == ("dense", "NN")
    assert {kind for kind, _ in kinds.values()} == {"conv", "pool", "dense", "injective"}


# -- target classes ----------------------------------------------------------------------------


def test_cuda_targets_of_one_arch_share_a_class_whatever_their_json_says() -> None:
    h100 = tvm.target.Target("nvidia/nvidia-h100")
    # TVM 0.27 has no H200 tag; a hand-written H200 target of the same arch, without L2 size.
    h200_json = {k: v for k, v in fingerprint(h100).details["target"].items()}
    h200_json.pop("l2_cache_size_bytes")
    h200 = tvm.target.Target(h200_json)
    assert fingerprint(h100).key != fingerprint(h200).key
    assert target_class(h100) == target_class(h200) == "cuda/sm_90a"
    assert target_class(tvm.target.Target({"kind": "cuda", "arch": "sm_90"})) == "cuda/sm_90"
    assert target_class(tvm.target.Target("nvidia/nvidia-a100")) == "cuda/sm_80"
    assert fingerprint(h100).tvm_version == tvm.__version__


def test_cuda_launch_limits_other_than_the_defaults_make_another_class() -> None:
    big_blocks = tvm.target.Target(
        {"kind": "cuda", "arch": "sm_90", "max_shared_memory_per_block": 232448}
    )
    assert target_class(big_blocks) == (
        "cuda/sm_90/max_shared_memory_per_block=232448-max_threads_per_block=1024"
        "-thread_warp_size=32"
    )


def test_cpu_targets_share_a_class_across_core_counts_not_cpus() -> None:
    two = tvm.target.Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 2})
    sixteen = tvm.target.Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 16})
    zen = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
    assert fingerprint(two).key != fingerprint(sixteen).key
    assert target_class(two) == target_class(sixteen)
    assert target_class(two).startswith("llvm/skylake/")
    assert target_class(zen) != target_class(two)
