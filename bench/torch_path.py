"""PyTorch models through ``tunefarm.compile`` (``torch.export`` -> Relax), checked against torch.

For each model: export it with ``torch.export`` at its example inputs, compile it with
``tunefarm.compile`` (``--trials`` each, a fresh SQLite database, no untuned baseline), then run
the library and torch eager on a new seeded input and time both, one after the other, on this
machine. The error is the largest absolute difference over the largest absolute torch output
(issue 18's goal: at most 1e-3 in fp32, 1e-2 in fp16). ``input_sensitivity`` is how far the
outputs of the example input and the new one are apart on the same scale: below 1e-2 the check
is reported "inconclusive". With torch's default initialization, the plain MobileNetV2 hardly
looks at its input (two random images: outputs 2e-7 apart on their scale), so its check is
inconclusive unless batch norm's statistics are calibrated: ``calibrated`` runs four random
batches through each plain model with batch norm first. ``--source torchvision`` takes
torchvision's and transformers' models instead (the GPU host has them). Denormals are flushed,
as torch's own CPU kernels would otherwise crawl on the tiny activations of random weights.

Models are the plain-torch definitions of ``cpu_models.py``: ``resnet50``, ``mobilenet_v2``,
and ``bert_base_masked``, BERT-base's 12 encoder layers on 128 tokens with its attention mask
as a second input (the last 28 tokens padding).

    .venv/bin/python bench/torch_path.py [--models resnet50,...] [--trials 0] [--target llvm]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cpu_models
from local_tuning import machine_info, versions

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
PADDED_TOKENS = 28


def example(
    name: str, seed: int, source: str = "plain"
) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(seed)
    if source == "torchvision":  # the device's torchvision and transformers (gpu_models.py)
        import gpu_models

        model = gpu_models.build(name.removesuffix("_masked"), seed=seed)
        # torchvision's untrained weights fade out like ours do (see calibrated): in fp16 the
        # output then underflows and every check fails or proves nothing.
        return calibrated(model.module, model.inputs), model.inputs
    if name == "bert_base_masked":
        module = cpu_models.MaskedBertEncoder().eval()
        mask = torch.ones(1, cpu_models.BERT_SEQUENCE, dtype=torch.int64)
        mask[0, -PADDED_TOKENS:] = 0
        hidden = torch.randn(1, cpu_models.BERT_SEQUENCE, cpu_models.BERT_HIDDEN)
        return module, (hidden, mask)
    model = cpu_models.build(name, seed=seed)
    return calibrated(model.module, model.inputs), model.inputs


def calibrated(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.nn.Module:
    """Batch norm's running statistics from random batches, as training would leave them.

    With the defaults (mean 0, variance 1) a deep random network's activations fade out, and
    the output stops depending on the input: the check would prove nothing.
    """
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return module
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the calibration batches
    module.train()
    with torch.no_grad():
        for _ in range(4):
            module(*(torch.randn(8, *tensor.shape[1:]) for tensor in inputs))
    return module.eval()


def p50_ms(call: Any, runs: int, sync: Any = lambda: None) -> float:
    """Median of ``runs`` calls, each waited for (``sync``: the GPU's queue drained)."""
    call()
    sync()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        sync()
        times.append((time.perf_counter() - started) * 1e3)
    return round(statistics.median(times), 3)


def measure(
    name: str,
    *,
    trials: int,
    target: str,
    fp16: bool,
    runs: int,
    work: Path,
    source: str,
    vendor_kernels: bool = False,
    torch_compile_modes: tuple[str, ...] = (),
    records_in: Path | None = None,
    pack_out: Path | None = None,
) -> dict[str, Any]:
    import tunefarm
    from tunefarm.tuning_db.json_logs import export_json_logs, import_json_logs

    module, inputs = example(name, seed=0, source=source)
    database = f"sqlite:///{work / (name + '.db')}"
    if records_in is not None:
        import_json_logs(database, records_in)
    started = time.perf_counter()
    try:
        compiled = tunefarm.compile(
            module,
            inputs,
            target=target,
            trials=trials,
            fp16=fp16,
            database=database,
            out_dir=work / name,
            progress=False,
            baseline=False,
            vendor_kernels=vendor_kernels,
        )
    except tunefarm.TunefarmError as err:
        return {"model": name, "error": str(err)}
    compile_sec = round(time.perf_counter() - started, 1)
    packed = None
    if pack_out is not None:  # the records this compile tuned, cut down to a pack
        from make_pack import make_pack

        export_json_logs(database, work / f"{name}-records")
        packed = make_pack(work / f"{name}-records", pack_out / name)
    _, fresh = example(name, seed=1, source=source)  # new inputs; the compiled module stays
    if name == "bert_base_masked":
        fresh = (fresh[0], inputs[1])  # the same padding
    sync: Any = lambda: None  # noqa: E731
    if target.startswith("cuda"):
        # Both sides on the GPU: torch eager (fp32) there, and the library takes torch's CUDA
        # tensors without a copy (DLPack); every timed call is waited for.
        module, sync = module.cuda(), torch.cuda.synchronize
        inputs = tuple(tensor.cuda() for tensor in inputs)
        fresh = tuple(tensor.cuda() for tensor in fresh)
    with torch.no_grad():
        expected = module(*fresh).float().cpu()
        ours = compiled(*fresh).float().cpu()
        scale = float(expected.abs().max())
        error = float((ours - expected).abs().max()) / max(scale, 1e-12)
        # A check proves nothing if the output hardly depends on the input.
        seen = module(*inputs).float().cpu()
        sensitivity = float((seen - expected).abs().max()) / max(scale, 1e-12)
        torch_ms = p50_ms(lambda: module(*fresh), runs, sync)
    ours_ms = p50_ms(lambda: compiled(*fresh), runs, sync)
    peers = (
        compile_peers(
            module, compiled, fresh, fp16=fp16, expected=expected, modes=torch_compile_modes
        )
        if torch_compile_modes
        else {}
    )
    return {
        "model": name,
        "compile_sec": compile_sec,
        "trials": trials,
        "pack": {"path": str(pack_out / name), "workloads": packed[0]} if packed else None,
        "relative_error": error,
        "input_sensitivity": sensitivity,
        "within_goal": error <= (1e-2 if fp16 else 1e-3) if sensitivity > 1e-2 else "inconclusive",
        "ours_p50_ms": ours_ms,
        "torch_eager_p50_ms": torch_ms,
        "ours_over_torch": round(ours_ms / torch_ms, 3),
        "tasks": len(compiled.manifest.get("tasks", [])),
        "layout": compiled.manifest["pipeline"]["layout"],
        "vendor_calls": compiled.manifest["pipeline"].get("vendor_calls", {}),
        **peers,
    }


def compile_peers(
    module: torch.nn.Module,
    compiled: Any,
    inputs: tuple[torch.Tensor, ...],
    *,
    fp16: bool,
    expected: torch.Tensor,
    modes: tuple[str, ...],
) -> dict[str, Any]:
    """On the GPU, the library beside torch.compile at the library's precision, each timed
    as ``gpu_peers`` times its rows: p50 per call, back to back, and CUPTI's busy time. In
    fp16, also how far torch's own half-precision run is from its fp32 one: the error the
    library's is to be read against."""
    from gpu_peers import time_calls
    from vendor_profile import top_kernels

    torch_inputs = inputs  # the library takes fp32 and converts; torch runs in half itself
    extra: dict[str, Any] = {}
    if fp16:
        module = module.half()
        torch_inputs = tuple(t.half() if t.is_floating_point() else t for t in inputs)
        with torch.no_grad():
            half = module(*torch_inputs).float().cpu()
        scale = max(float(expected.abs().max()), 1e-12)
        extra["torch_fp16_relative_error"] = float((half - expected).abs().max()) / scale
    rows: dict[str, Any] = {
        "tunefarm": time_calls(lambda: compiled(*inputs), samples=200, warmup=20)
    }
    # Where each side's GPU time goes, kernel by kernel (the heaviest first).
    rows["tunefarm"]["top_kernels"] = top_kernels(lambda: compiled(*inputs))
    for mode in modes:
        torch._dynamo.reset()
        torch_compiled = torch.compile(module, mode=None if mode == "default" else mode)
        with torch.no_grad():
            for _ in range(3):  # compile, then record CUDA graphs where the mode uses them
                torch_compiled(*torch_inputs)
            rows[f"torch.compile {mode}"] = time_calls(
                partial(torch_compiled, *torch_inputs), samples=200, warmup=20
            )
            rows[f"torch.compile {mode}"]["top_kernels"] = top_kernels(
                partial(torch_compiled, *torch_inputs)
            )
    torch._dynamo.reset()
    # Each column against the mode that is best in that column: reduce-overhead often wins per
    # call and back to back while another mode has less GPU time.
    peers = {label: row for label, row in rows.items() if label != "tunefarm"}
    ratios, best_mode = {}, {}
    for key in ("p50_ms", "mean_back_to_back_ms", "gpu_busy_us"):
        label = min(peers, key=lambda name: peers[name][key])
        ratios[key] = round(rows["tunefarm"][key] / peers[label][key], 3)
        best_mode[key] = label
    return {
        "peers": rows,
        "tunefarm_over_best_torch_compile": ratios,
        "best_torch_compile_mode": best_mode,
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,mobilenet_v2,bert_base_masked")
    parser.add_argument("--trials", type=int, default=0)
    parser.add_argument("--target", default="llvm")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--vendor-kernels", action="store_true", help="cuDNN/cuBLASLt (CUDA)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--source", choices=["plain", "torchvision"], default="plain")
    parser.add_argument(
        "--torch-compile", action="store_true", help="CUDA: time torch.compile beside it"
    )
    parser.add_argument(
        "--max-autotune",
        action="store_true",
        help="with --torch-compile, also time mode=max-autotune (minutes of autotuning a model)",
    )
    parser.add_argument(
        "--records-in", type=Path, default=None, help="records (a pack) each compile starts from"
    )
    parser.add_argument(
        "--pack-out", type=Path, default=None, help="write each model's best records here (a pack)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--tag", default=None, help="the machine's short name in the file name")
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    machine = machine_info()
    if args.target.startswith("cuda") and torch.cuda.is_available():
        # The card, not the tag, says which GPU ran it (a tag once named the wrong one).
        machine["gpu"] = torch.cuda.get_device_name()
    result: dict[str, Any] = {
        "benchmark": "torch_path",
        "started_utc": stamp,
        "machine": machine,
        "versions": versions(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "rows": [],
    }
    compile_modes: tuple[str, ...] = ()
    if args.torch_compile:
        compile_modes = ("default", "reduce-overhead") + (
            ("max-autotune",) if args.max_autotune else ()
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"torch_path-{args.tag or machine['hostname']}-{stamp}.json"
    with tempfile.TemporaryDirectory(prefix="torch-path-") as scratch:
        for name in args.models.split(","):
            row = measure(
                name,
                trials=args.trials,
                target=args.target,
                fp16=args.fp16,
                runs=args.runs,
                work=Path(scratch),
                source=args.source,
                vendor_kernels=args.vendor_kernels,
                torch_compile_modes=compile_modes,
                records_in=args.records_in,
                pack_out=args.pack_out,
            )
            result["rows"].append(row)
            path.write_text(json.dumps(result, indent=1))
            print(json.dumps(row), flush=True)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
