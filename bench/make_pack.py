"""Cut an exported record set down to a pre-tuned pack: the best valid record of each workload.

    tunefarm records export /tmp/all --db sqlite:///tuning.db
    python3 bench/make_pack.py /tmp/all packs/resnet50-fp16-sm_90

The pack is MetaSchedule's JSON layout, as ``tunefarm records import`` reads it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
FAILED_RUN_SEC = 1e9


def make_pack(source: Path, destination: Path, *, top_k: int = 1) -> tuple[int, int]:
    workloads = source.joinpath(WORKLOAD_FILE).read_text().splitlines()
    best: dict[int, list[tuple[float, str]]] = {}
    for line in source.joinpath(RECORD_FILE).read_text().splitlines():
        index, record = json.loads(line)
        run_secs = record[1] or []
        mean = sum(run_secs) / len(run_secs) if run_secs else FAILED_RUN_SEC
        if mean < FAILED_RUN_SEC:
            best.setdefault(index, []).append((mean, json.dumps(record)))
    destination.mkdir(parents=True, exist_ok=True)
    kept = sorted(best)
    new_index = {old: new for new, old in enumerate(kept)}
    destination.joinpath(WORKLOAD_FILE).write_text("".join(workloads[old] + "\n" for old in kept))
    with destination.joinpath(RECORD_FILE).open("w") as out:
        for old in kept:
            for _, record in sorted(best[old])[:top_k]:
                out.write(f"[{new_index[old]}, {record}]\n")
    return len(kept), sum(min(top_k, len(best[old])) for old in kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a folder written by tunefarm records export")
    parser.add_argument("destination", type=Path)
    parser.add_argument("--top-k", type=int, default=1)
    args = parser.parse_args(argv)
    workloads, records = make_pack(args.source, args.destination, top_k=args.top_k)
    print(f"packed {records} records of {workloads} workloads into {args.destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
