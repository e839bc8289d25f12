"""Issue 17's search-space ideas against MetaSchedule's own CUDA space, task by task, on one GPU
in one process.

Each case is one small-output task as ``--fp16`` builds it (ResNet-50's 3x3 convolutions at
7x7 and 14x14, BERT-base's projections at sequence 128). Each is tuned once per variant with
the same budget and seed, each time on a fresh database:

- ``metaschedule``: MetaSchedule's CUDA tensor-core space on our default target (48 KB of
  shared memory a block, as TVM's H100 tag has it);
- ``split_k``: the same with the split-K sketches of ``tuner/split_k.py``;
- ``shared_227k``: MetaSchedule's space on a target that allows sm_90's 227 KB of dynamic
  shared memory a block (TVM's CUDA runtime opts a kernel in above 48 KB).

The best time of each, its TFLOP/s, and for ``split_k`` whether the best record is a split, go
to the JSON; where torch has CUDA, the same operation in torch (cuDNN, cuBLAS) is timed beside
them with CUDA events.

    python3 bench/split_k.py --trials 128 --out $OUT
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnx
from local_tuning import machine_info

CASES: dict[str, dict[str, int]] = {
    "conv3x3_7x7x512": {"channels": 512, "size": 7},
    "conv3x3_14x14x256": {"channels": 256, "size": 14},
    "dense_128x3072x768": {"rows": 128, "inputs": 3072, "outputs": 768},
    "dense_128x768x768": {"rows": 128, "inputs": 768, "outputs": 768},
}


def case_task(name: str, work: Path, target: Any) -> Any:
    """The heaviest task of the case's one-operator model, after the ``--fp16`` pipeline."""
    from tunefarm.tuner.model_validation import validate_onnx_model
    from tunefarm.tuner.onnx_import import import_onnx
    from tunefarm.tuner.pipelines import PipelineOptions, run_pipeline
    from tunefarm.tuner.sample_models import conv_relu, dense
    from tunefarm.tuner.tasks import extract_tuning_tasks

    shape = CASES[name]
    model = conv_relu(**shape) if name.startswith("conv") else dense(**shape)
    path = work / f"{name}.onnx"
    onnx.save(model, str(path))
    mod = run_pipeline(
        import_onnx(validate_onnx_model(path)), target=target, options=PipelineOptions(fp16=True)
    ).mod
    return max(extract_tuning_tasks(mod, target=target), key=lambda task: task.flops)


VARIANTS: dict[str, dict[str, Any]] = {
    "metaschedule": {"split_k": False, "shared_bytes": None},
    "split_k": {"split_k": True, "shared_bytes": None},
    "shared_227k": {"split_k": False, "shared_bytes": 227 * 1024},
}


def variant_target(name: str) -> Any:
    from tunefarm.tuner.targets import parse_target

    shared = VARIANTS[name]["shared_bytes"]
    config: dict[str, Any] = {"kind": "cuda"}
    if shared is not None:
        config["max_shared_memory_per_block"] = shared
    return parse_target(json.dumps(config))


def tune_case(
    task: Any,
    *,
    case: str,
    variant: str,
    trials: int,
    seed: int,
    pool: Any,
    target: Any,
    work: Path,
) -> dict[str, Any]:
    from tunefarm.tuner.pool_measure import CandidateWriter, TrialRunner
    from tunefarm.tuner.search import FAST_SEARCH, tune
    from tunefarm.tuner.trial import measure_settings_for
    from tunefarm.tuning_db import SqlDatabase
    from tunefarm.tuning_db.sql_database import FAILED_RUN_SEC

    split_k = VARIANTS[variant]["split_k"]
    database = SqlDatabase(f"sqlite:///{work / f'{case}-{variant}.db'}", target=target)
    started = time.perf_counter()
    report = tune(
        [task],
        target=target,
        database=database,
        builder=CandidateWriter(str(work / f"candidates-{case}-{variant}")),
        runner=TrialRunner(pool, settings=measure_settings_for(target)),
        total_trials=trials,
        max_trials_per_task=trials,
        settings=replace(FAST_SEARCH, split_k=split_k),
        seed=seed,
        work_dir=str(work / f"logs-{case}-{variant}"),
    )
    wall = time.perf_counter() - started
    progress = report.tasks[task.name]
    best = database.query_tuning_record(task.mod, target, task.name)
    records = database.get_all_tuning_records()
    split_records = [record for record in records if _is_split(record.trace)]
    split_times = [t for t in map(_mean, split_records) if t < FAILED_RUN_SEC]
    best_sec = progress.best_sec
    return {
        "trials": progress.trials,
        "failures": progress.failures,
        "wall_sec": round(wall, 1),
        "best_us": round(best_sec * 1e6, 2) if best_sec else None,
        "tflops": round(task.flops / best_sec / 1e12, 2) if best_sec else None,
        "best_is_split": best is not None and _is_split(best.trace),
        # Every trial is filed (a failed one with a sentinel time): how many were splits.
        "split_trials": len(split_records),
        "best_split_us": round(min(split_times) * 1e6, 2) if split_times else None,
    }


def _is_split(trace: Any) -> bool:
    return any(inst.kind.name == "RFactor" for inst in trace.insts)


def _mean(record: Any) -> float:
    times = [float(t) for t in record.run_secs or []]
    return sum(times) / len(times) if times else float("inf")


def torch_time_us(name: str, runs: int = 200) -> float | None:
    """The case's operation in torch fp16 (cuDNN or cuBLAS), mean of ``runs`` calls."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    shape = CASES[name]
    device = torch.device("cuda")
    with torch.no_grad():
        if name.startswith("conv"):
            c, s = shape["channels"], shape["size"]
            conv = torch.nn.Conv2d(c, c, 3, padding=1).to(device).half()
            conv = conv.to(memory_format=torch.channels_last)
            x = torch.randn(1, c, s, s, device=device).half().to(memory_format=torch.channels_last)

            def call() -> Any:
                return torch.relu(conv(x))
        else:
            linear = torch.nn.Linear(shape["inputs"], shape["outputs"]).to(device).half()
            x = torch.randn(shape["rows"], shape["inputs"], device=device).half()

            def call() -> Any:
                return linear(x)

        from gpu_peers import back_to_back  # imports torch: only where torch has CUDA

        for _ in range(20):
            call()
        return round(back_to_back(call, calls=runs)["mean_back_to_back_ms"] * 1000, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma list of " + ", ".join(CASES)
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma list of " + ", ".join(VARIANTS)
    )
    parser.add_argument("--trials", type=int, default=128, help="budget of each tuning run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None, help="build processes")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--tag", default="gpu", help="the machine's short name in the file name")
    args = parser.parse_args(argv)

    from tunefarm.tuner.warm_pool import WarmPool, default_worker_count

    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or variants[0] != "metaschedule":
        parser.error(f"--variants: metaschedule first, then any of {', '.join(VARIANTS)}")
    targets = {variant: variant_target(variant) for variant in variants}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    result: dict[str, Any] = {
        "benchmark": "split_k",
        "measured_at": stamp,
        "machine": machine_info(),
        "targets": {variant: str(target) for variant, target in targets.items()},
        "trials_per_run": args.trials,
        "seed": args.seed,
        "cases": {},
    }
    workers = args.workers or default_worker_count("cuda")
    path = args.out / f"split_k-{args.tag}-{stamp}.json"
    with tempfile.TemporaryDirectory(prefix="split-k-") as scratch, WarmPool(workers) as pool:
        work = Path(scratch)
        for name in args.cases.split(","):
            row: dict[str, Any] = {}
            for variant, target in targets.items():
                task = case_task(name, work, target)
                row.update(task=task.name, gflop=round(task.flops / 1e9, 3))
                row[variant] = tune_case(
                    task,
                    case=name,
                    variant=variant,
                    trials=args.trials,
                    seed=args.seed,
                    pool=pool,
                    target=target,
                    work=work,
                )
            row["torch_us"] = torch_time_us(name)
            plain = row["metaschedule"]["best_us"]
            row["over_metaschedule"] = {
                variant: round(row[variant]["best_us"] / plain, 3)
                for variant in variants[1:]
                if plain and row[variant]["best_us"]
            }
            result["cases"][name] = row
            times = ", ".join(f"{variant} {row[variant]['best_us']} us" for variant in variants)
            print(f"{name}: {times}, torch {row['torch_us']} us", flush=True)
            # After every case: a run cut short by its time limit keeps what it measured.
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
