"""CUDA build cost of tuning candidates: where a warm worker's build time goes, and what NVRTC's
options save, measured in one process on the device GPU's host.

Candidates are random schedules of MetaSchedule's CUDA design space (post-order-apply, the CUDA
postprocessors applied) for a ResNet-50 3x3 conv2d (NHWC, fp32) and a dense layer. Each
candidate is built with ``tvm.driver.build`` once under every variant, the variants in an order
that rotates from one candidate to the next, after an untimed warm-up build. Each build is split
into TVM's lowering and code generation and the NVRTC call (``tvm_callback_cuda_compile``,
wrapped here to time it).

Variants (TVM reads these variables on every compile):

- ``default``: TVM 0.27's NVRTC options.
- ``pch``: ``TVM_CUDA_NVRTC_EXTRA_OPTS=--pch``, NVRTC's automatic precompiled headers (CUDA
  12.8+). TVM prepends ``#include <cuda/std/cstdint>`` and ``<cuda/std/limits>`` to every
  kernel, so every compile parses libcu++ headers; a PCH parses them once per process.
- ``cuda-path``: ``CUDA_PATH`` set, which spares TVM a ``which nvcc`` subprocess on every
  compile.
- ``ptxas-O1`` (``TVM_CUDA_PTXAS_EXTRA_OPTS=-O1``) and ``ptx-only`` (NVRTC stops at PTX, no
  ptxas), for scale only: they change or leave out the machine code, so a tuner must not
  measure with them.

The binary sizes of each variant are compared with the default's, so a variant that changes
the code shows it. A one-line kernel, compiled through TVM's path and with NVRTC alone, gives
the cost of a compile whatever the kernel.

    python3 bench/nvrtc_build.py [--candidates 24] [--variants default,pch,...] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from local_tuning import machine_info, versions

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "pch": {"TVM_CUDA_NVRTC_EXTRA_OPTS": "--pch"},
    "ptxas-O1": {"TVM_CUDA_PTXAS_EXTRA_OPTS": "-O1"},
    "ptx-only": {"_format": "ptx"},
    "cuda-path": {"CUDA_PATH": ""},  # filled in with TVM's own answer
}


def nvcc_module() -> Any:
    from tvm.support import nvcc

    return nvcc


def workloads() -> dict[str, Any]:
    from tvm import te, topi

    data = te.placeholder((1, 56, 56, 64), name="data")
    kernel = te.placeholder((3, 3, 64, 64), name="kernel")
    conv = topi.nn.conv2d_nhwc(data, kernel, stride=1, padding=1, dilation=1)
    x = te.placeholder((16, 2048), name="x")
    w = te.placeholder((1000, 2048), name="w")
    dense = topi.nn.dense(x, w)
    return {
        "conv2d_nhwc_56x56x64_3x3": te.create_prim_func([data, kernel, conv]),
        "dense_16x2048x1000": te.create_prim_func([x, w, dense]),
    }


def candidates(func: Any, target: Any, count: int, seed: int) -> list[Any]:
    """``count`` random schedules of ``func``'s design space that pass the postprocessors."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    found: list[Any] = []
    state = seed
    while len(found) < count and state < seed + 50 * count:
        context = ms.TuneContext(
            mod=mod,
            target=target,
            space_generator="post-order-apply",
            search_strategy="replay-trace",
            task_name="candidate",
            rand_state=state,
        )
        state += 1
        for space in context.generate_design_space():
            sch = space.copy()
            if all(post.apply(sch) for post in context.space_generator.postprocs):
                found.append(sch.mod)
            if len(found) == count:
                break
    return found


class CompileTimer:
    """Wraps TVM's CUDA compile callback to time the NVRTC part of every build."""

    def __init__(self) -> None:
        import tvm_ffi

        self.nvcc = nvcc_module()
        self.target_format = "cubin"
        self.seconds: list[float] = []
        self.sizes: list[int] = []
        tvm_ffi.register_global_func("tvm_callback_cuda_compile", self._compile, override=True)

    def _compile(self, code: str) -> bytes:
        started = time.perf_counter()
        if self.target_format == "cubin":
            binary = self.nvcc.tvm_callback_cuda_compile(code)
        else:  # timed, never run: the module is built but not loaded
            binary = self.nvcc.compile_cuda(code, target_format=self.target_format)
        self.seconds.append(time.perf_counter() - started)
        self.sizes.append(len(binary))
        return binary


def build_once(
    mod: Any, target: Any, timer: CompileTimer, variant: dict[str, str]
) -> dict[str, Any]:
    """One build of ``mod`` under ``variant``'s environment: seconds in all and in NVRTC."""
    from tvm.driver import build as tvm_build

    env = {key: value for key, value in variant.items() if not key.startswith("_")}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    timer.target_format = variant.get("_format", "cubin")
    before = len(timer.seconds)
    started = time.perf_counter()
    try:
        tvm_build(mod, target=target)
    except Exception as err:  # a candidate that fails to build is data
        return {"error": str(err).splitlines()[0][:200]}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    total = time.perf_counter() - started
    return {
        "build_sec": total,
        "nvrtc_sec": sum(timer.seconds[before:]),
        "bytes": sum(timer.sizes[before:]),
    }


def summarize(builds: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [b for b in builds if "error" not in b]
    totals = [b["build_sec"] for b in ok]
    nvrtc = [b["nvrtc_sec"] for b in ok]

    def stat(values: list[float], how: Any) -> float | None:
        return round(how(values), 4) if values else None

    return {
        "builds": len(ok),
        "errors": [b["error"] for b in builds if "error" in b],
        "build_sec_median": stat(totals, statistics.median),
        "build_sec_mean": stat(totals, statistics.mean),
        "nvrtc_sec_median": stat(nvrtc, statistics.median),
        "nvrtc_sec_mean": stat(nvrtc, statistics.mean),
        "lowering_sec_median": stat(
            [t - n for t, n in zip(totals, nvrtc, strict=True)], statistics.median
        ),
        "build_sec_total": round(sum(totals), 3),
        "binary_bytes": [b.get("bytes") for b in builds],
    }


TRIVIAL_KERNEL = """extern "C" __global__ void __launch_bounds__(32) trivial(float* a) {
  a[threadIdx.x] = 1.0f;
}
"""


def fixed_cost(repeats: int) -> dict[str, Any]:
    """What one NVRTC compile costs whatever the kernel: a one-line kernel, compiled through
    TVM's path (its preamble and options) and with NVRTC alone (the architecture only)."""
    try:
        from cuda.bindings import nvrtc
    except ImportError as err:  # no NVRTC here: the builds will say so too
        return {"error": str(err)}
    nvcc = nvcc_module()

    def bare() -> None:
        _, program = nvrtc.nvrtcCreateProgram(TRIVIAL_KERNEL.encode(), b"k.cu", 0, None, None)
        (result,) = nvrtc.nvrtcCompileProgram(program, 1, [b"--gpu-architecture=sm_90"])
        nvrtc.nvrtcDestroyProgram(program)
        if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"NVRTC: {result}")

    paths = {
        "tvm_compile_cuda": lambda: nvcc.compile_cuda(
            TRIVIAL_KERNEL, target_format="cubin", arch="sm_90"
        ),
        "nvrtc_alone": bare,
    }
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats + 1):
        for name, compile_once in paths.items():
            started = time.perf_counter()
            compile_once()
            seconds[name].append(time.perf_counter() - started)
    # The first of each is the process's first use; it is kept apart.
    return {
        name: {
            "first_sec": round(values[0], 4),
            "median_sec": round(statistics.median(values[1:]), 4),
        }
        for name, values in seconds.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=24, help="per workload")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS)
    )
    parser.add_argument("--target", default="cuda -arch=sm_90", help="as tunefarm compile takes it")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    from tvm.driver import build as tvm_build

    from tunefarm.tuner.targets import parse_target

    target = parse_target(args.target)
    started_at = datetime.now(timezone.utc)
    timer = CompileTimer()
    try:
        from cuda.bindings import nvrtc

        nvrtc_version = ".".join(str(part) for part in nvrtc.nvrtcVersion()[1:])
    except Exception as err:  # recorded, not fatal: TVM reports the real failure on build
        nvrtc_version = f"unknown ({err})"

    names = args.variants.split(",")
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or "default" not in names:
        parser.error(f"--variants: include default, and only {', '.join(VARIANTS)}")
    variants = {name: dict(VARIANTS[name]) for name in names}
    if "cuda-path" in variants:
        try:
            variants["cuda-path"]["CUDA_PATH"] = nvcc_module().find_cuda_path()
        except RuntimeError as err:  # no CUDA here: the builds will say so
            print(f"no cuda-path variant: {err}", file=sys.stderr)
            del variants["cuda-path"]
    fixed = fixed_cost(5)
    print(f"one-line kernel: {fixed}", file=sys.stderr)
    results: dict[str, Any] = {}
    for name, func in workloads().items():
        mods = candidates(func, target, args.candidates, args.seed)
        print(f"{name}: {len(mods)} candidates", file=sys.stderr)
        tvm_build(mods[0], target=target)  # untimed: first-use costs of TVM and NVRTC
        builds: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
        order = list(variants)
        for index, mod in enumerate(mods):
            # Every candidate under every variant, in an order that rotates, so that no
            # variant always comes first (or right after another) on a candidate.
            shift = index % len(order)
            for variant in order[shift:] + order[:shift]:
                builds[variant].append(build_once(mod, target, timer, variants[variant]))
        results[name] = {variant: summarize(rows) for variant, rows in builds.items()}
        default = results[name]["default"]
        for variant, row in results[name].items():
            row["same_binary_sizes_as_default"] = row["binary_bytes"] == default["binary_bytes"]
            if default["build_sec_total"] and row["build_sec_total"]:
                row["default_over_this_build_sec"] = round(
                    default["build_sec_total"] / row["build_sec_total"], 3
                )
            print(
                f"  {variant:14s} build mean {row['build_sec_mean']} s median "
                f"{row['build_sec_median']} (nvrtc mean {row['nvrtc_sec_mean']}, lowering median "
                f"{row['lowering_sec_median']}), {row['builds']} built, {len(row['errors'])} "
                f"errors, default/this {row.get('default_over_this_build_sec')}",
                file=sys.stderr,
            )

    label = machine_info()["hostname"]
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"nvrtc_build-{label}-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "benchmark": "nvrtc_build",
                "started_at": started_at.isoformat(),
                "machine": machine_info(),
                "versions": {**versions(), "nvrtc": nvrtc_version},
                "settings": {
                    "candidates": args.candidates,
                    "seed": args.seed,
                    "target": str(target),
                },
                "variants": variants,
                "one_line_kernel": fixed,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
