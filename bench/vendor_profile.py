"""Where the time goes with vendor kernels (issue 17): one model, several builds, kernel by kernel.

In one process on one GPU, for ResNet-50 (or another ``gpu_models`` model) at one precision:

- ``tunefarm tuned``: every task from the records (``--records``), no vendor call;
- ``vendor fused``: convolutions with their bias, residual and ReLU as one cuDNN call
  (``cudnnConvolutionBiasActivationForward``), matmuls on cuBLASLt;
- ``vendor plain``: the convolutions alone on cuDNN (``cudnnConvolutionForward``), their
  epilogues left to TVM, which fuses each into one elementwise kernel;
- ``vendor cudnn-depthwise``: ``vendor fused`` with depthwise convolutions on cuDNN
  instead of our kernel (``vendor_depthwise.cu``), as before it existed;
- ``torch.compile reduce-overhead``, the goal's reference.

Each row has p50 per call, the back-to-back mean and CUPTI's busy time (``gpu_peers``), plus the
heaviest kernels by GPU time per call: which cuDNN kernels ran, and what torch runs instead.

    python3 bench/vendor_profile.py --model resnet50 --fp16 --records packs/resnet50-fp16-sm_90
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gpu_models
from gpu_fidelity import kernel_times
from gpu_peers import gpu_name, time_calls

TOP_KERNELS = 20


def top_kernels(run: Any) -> list[dict[str, Any]]:
    kernels = kernel_times(run, 20)
    rows = sorted(kernels.items(), key=lambda item: -item[1]["us_per_call"])[:TOP_KERNELS]
    return [{"kernel": name[:120], **row} for name, row in rows]


# label: (offload, conv epilogue, our depthwise kernel)
BUILDS = {
    "tunefarm tuned": (False, True, True),
    "vendor fused": (True, True, True),
    "vendor cudnn-depthwise": (True, True, False),
    "vendor plain": (True, False, True),
    # What --vendor-kernels builds: fused chains, each only where it beats its tuned record.
    "vendor chosen": (True, True, True),
}


def build_rows(
    model: gpu_models.BenchModel,
    onnx_path: Path,
    *,
    half: bool,
    database_url: str | None,
    builds: list[str],
    tf32: bool = False,
) -> dict[str, Any]:
    import tvm

    from tunefarm.tuner import build, vendor_choice, vendor_kernels
    from tunefarm.tuner.model_validation import validate_onnx_model
    from tunefarm.tuner.onnx_import import import_onnx
    from tunefarm.tuner.pipelines import PipelineOptions, default_phases
    from tunefarm.tuner.targets import parse_target
    from tunefarm.tuning_db import SqlDatabase

    target = parse_target("cuda")
    device = tvm.cuda(0)
    imported = import_onnx(validate_onnx_model(onnx_path, max_bytes=4 * 1024**3))
    toolchain = vendor_kernels.find_toolchain()
    vendor_kernels.register_in_process(toolchain)
    database = SqlDatabase(database_url, target=target) if database_url else None
    args = [tvm.runtime.tensor(t.numpy(), device=device) for t in model.inputs]
    module, inputs = model.on("cuda", half=half)
    with torch.no_grad():
        reference_np = module(*inputs).float().cpu().numpy()
    rows: dict[str, Any] = {}
    for label in builds:
        offload, epilogue, own_depthwise = BUILDS[label]
        started = time.perf_counter()
        mod, counts = imported, None
        choices: list[vendor_choice.ChainChoice] = []
        select = (
            vendor_choice.selector(target=target, database_url=database_url, into=choices)
            if label == "vendor chosen" and database_url is not None
            else None
        )
        with target, tvm.transform.PassContext(opt_level=3):
            for phase in default_phases(target, PipelineOptions(fp16=half)):
                if phase.name == "legalize" and offload:
                    mod, counts = vendor_kernels.offload_to_vendor_kernels(
                        mod,
                        conv_epilogue=epilogue,
                        select=select,
                        tf32=tf32,
                        own_depthwise=own_depthwise,
                    )
                mod = tvm.transform.Sequential(phase.passes)(mod)
        if database is not None:
            executable = build.compile_tuned(mod, target=target, database=database, cuda_graph=True)
        else:
            executable = build.compile_untuned(mod, target=target, cuda_graph=True)
        library = onnx_path.with_suffix(f".{label.replace(' ', '_')}.so")
        build.export_library(executable, library, vendor=toolchain if offload else None)
        vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(library)), device)
        main = vm["main"]
        output = main(*args)
        output = output[0] if isinstance(output, (list, tuple)) else output
        diff = float(np.abs(output.numpy().astype(np.float32) - reference_np).max())
        row = time_calls(lambda main=main: main(*args), samples=200, warmup=20)
        row.update(
            build_sec=round(time.perf_counter() - started, 1),
            max_abs_diff_vs_torch=diff,
            vendor_calls=dict(counts or {}),
            vendor_choices=[choice.as_dict() for choice in choices],
            top_kernels=top_kernels(lambda main=main: main(*args)),
        )
        rows[label] = row
        print(f"{label}: p50 {row['p50_ms']} ms, busy {row['gpu_busy_us']} us", flush=True)
    return rows


def torch_row(model: gpu_models.BenchModel, *, half: bool) -> dict[str, Any]:
    module, inputs = model.on("cuda", half=half)
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = torch.compile(module, mode="reduce-overhead")
        for _ in range(3):
            compiled(*inputs)
        row = time_calls(lambda: compiled(*inputs), samples=200, warmup=20)
        row["top_kernels"] = top_kernels(lambda: compiled(*inputs))
    print(f"torch.compile reduce-overhead: p50 {row['p50_ms']} ms, busy {row['gpu_busy_us']} us")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", choices=gpu_models.MODEL_NAMES)
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument(
        "--tf32", action="store_true", help="fp32 vendor calls on TF32 tensor cores (--tf32)"
    )
    parser.add_argument("--records", type=Path, default=None)
    parser.add_argument("--builds", default=",".join(BUILDS), help="of: " + ", ".join(BUILDS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/vendor-profile"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    started = datetime.now(timezone.utc)
    args.work.mkdir(parents=True, exist_ok=True)
    database_url = None
    if args.records is not None:
        from tunefarm.tuning_db.json_logs import import_json_logs

        database_url = f"sqlite:///{args.work / f'profile-{started:%H%M%S}.db'}"
        import_json_logs(database_url, args.records)
    model = gpu_models.build(args.model)
    onnx_path = gpu_models.export_onnx(model, args.work / f"{args.model}.onnx")
    result = {
        "benchmark": "vendor_profile",
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": {"hostname": socket.gethostname(), "gpu": gpu_name()},
        "model": args.model,
        "precision": "fp16" if args.fp16 else "fp32 (vendor calls TF32)" if args.tf32 else "fp32",
        "records": str(args.records) if args.records else None,
        "rows": {
            "torch.compile reduce-overhead": torch_row(model, half=args.fp16),
            **build_rows(
                model,
                onnx_path,
                half=args.fp16,
                database_url=database_url,
                builds=args.builds.split(","),
                tf32=args.tf32,
            ),
        },
    }
    for label, row in result["rows"].items():
        print(f"== {label}")
        for kernel in row["top_kernels"]:
            name = kernel["kernel"][:90]
            print(f"  {kernel['us_per_call']:8.1f} us x{kernel['launches']:<4} {name}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"vendor_profile-{socket.gethostname()}-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
