"""API load: p50/p99 latency of submit (POST /v1/jobs) and status (GET /v1/jobs/{id}) at fixed
request rates, against a real `tunefarm serve` (uvicorn, one process) on loopback, PostgreSQL
and Redis.

The load generator is open-loop: request i is sent at start + i/rate whatever the earlier ones
did, so a slow server shows up as latency, not as a lower rate. Latency is measured from the
moment a request is due. Submitted jobs are only queued (no coordinator runs) and are cancelled
at the end. Results go to ``bench/results/api_load-<label>-<UTC time>.json``.

    .venv/bin/python bench/api_load.py [--rates 50 200] [--duration 10] [--label vm]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tunefarm.api.services.teams import create_team
from tunefarm.tuner.sample_models import write_sample
from tunefarm.tuner.settings import Settings
from tunefarm.tuning_db.sql_database import open_engine

POSTGRES_ADMIN_URL = os.environ.get(
    "TUNEFARM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BROKER_URL = os.environ.get("TUNEFARM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
STATUS_JOBS = 20
CONNECTIONS = 64


def machine() -> dict[str, Any]:
    cpu_model = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kib = int(meminfo.read_text().split()[1])
        memory_gib = round(total_kib / 1024**2, 1)
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_api(env: dict[str, str], log: Path, url: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tunefarm", "serve"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the API did not start:\n{log.read_text()}")


async def drive(
    client: httpx.AsyncClient, rate: float, duration: float, request: Any, *, warm_up: bool = True
) -> dict[str, Any]:
    """Send ``rate`` requests a second for ``duration`` seconds; latencies in ms.

    One second at the same rate goes first and is not counted: it opens the client's
    connections, which a steady load has already.
    """
    if warm_up:
        await drive(client, rate, 1.0, request, warm_up=False)
    count = int(rate * duration)
    latencies: list[float] = []
    by_index: list[tuple[float, int]] = []
    statuses: dict[int, int] = {}
    errors = 0
    start = time.perf_counter() + 0.05

    async def one(index: int) -> None:
        nonlocal errors
        due = start + index / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        try:
            response = await request(client, index)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        except httpx.HTTPError:
            errors += 1
            return
        latencies.append((time.perf_counter() - due) * 1000)
        by_index.append((round((time.perf_counter() - due) * 1000, 1), index))

    await asyncio.gather(*(one(index) for index in range(count)))
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)

    def percentile(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)

    return {
        "rate_target": rate,
        "requests": count,
        "rate_achieved": round(len(latencies) / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "transport_errors": errors,
        "p50_ms": percentile(50),
        "p90_ms": percentile(90),
        "p99_ms": percentile(99),
        "max_ms": round(ordered[-1], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "slowest_ms_and_index": sorted(by_index)[-5:],
    }


async def run_load(
    url: str, token: str, model_id: str, rates: list[float], duration: float
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    # A pool of connections, as a real client fleet behind a proxy would use; requests past it
    # wait in the client, and the wait counts in their latency.
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    submitted: list[str] = []
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=30
    ) as client:
        body = {"model_id": model_id, "target": "llvm", "trials": 8}
        # Warm up: connections, the token, and the model's coverage analysis for status.
        for _ in range(STATUS_JOBS):
            response = await client.post("/v1/jobs", json=body)
            response.raise_for_status()
            submitted.append(response.json()["id"])
        for job_id in submitted:
            (await client.get(f"/v1/jobs/{job_id}")).raise_for_status()
        status_ids = list(submitted)

        async def submit(c: httpx.AsyncClient, _index: int) -> httpx.Response:
            response = await c.post("/v1/jobs", json=body)
            if response.status_code == 201:
                submitted.append(response.json()["id"])
            return response

        async def status(c: httpx.AsyncClient, index: int) -> httpx.Response:
            return await c.get(f"/v1/jobs/{status_ids[index % len(status_ids)]}")

        results: dict[str, Any] = {"status": [], "submit": []}
        # Status first: every submit writes the model into a job row (80 KB for the sample
        # model), and PostgreSQL's flushing of those writes would fall on the status runs.
        for name, request in (("status", status), ("submit", submit)):
            for rate in rates:
                result = await drive(client, rate, duration, request)
                results[name].append(result)
                print(
                    f"{name:<7} {rate:>5.0f}/s  p50 {result['p50_ms']:>8.2f} ms  "
                    f"p99 {result['p99_ms']:>8.2f} ms  achieved {result['rate_achieved']}/s  "
                    f"{result['statuses']}",
                    flush=True,
                )
                await asyncio.sleep(1.0)
        # Nothing may run these jobs later: cancel them (queued jobs end at once).
        for job_id in submitted:
            await client.post(f"/v1/jobs/{job_id}/cancel")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[50, 200])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per rate")
    parser.add_argument("--label", default="vm", help="machine label in the result's file name")
    parser.add_argument(
        "--api-workers", type=int, default=None, help="uvicorn processes (default: the server's)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"tunefarm_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    redis.Redis.from_url(BROKER_URL).flushdb()
    server = None
    try:
        with tempfile.TemporaryDirectory(prefix="tunefarm-api-load-") as scratch:
            engine = open_engine(db_url)
            _team, token = create_team(engine, "bench")
            engine.dispose()
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            env = {
                "TUNEFARM_DATABASE_URL": db_url,
                "TUNEFARM_BROKER_URL": BROKER_URL,
                "TUNEFARM_DATA_DIR": str(Path(scratch) / "data"),
                "TUNEFARM_API_PORT": str(port),
                **({"TUNEFARM_API_WORKERS": str(args.api_workers)} if args.api_workers else {}),
            }
            server = start_api(env, Path(scratch) / "api.log", url)
            model = write_sample("tiny-cnn", Path(scratch) / "tiny_cnn.onnx")
            with model.open("rb") as stream:
                uploaded = httpx.post(
                    f"{url}/v1/models",
                    files={"file": ("tiny_cnn.onnx", stream)},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=60,
                )
            uploaded.raise_for_status()
            results = asyncio.run(
                run_load(url, token, uploaded.json()["id"], args.rates, args.duration)
            )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        redis.Redis.from_url(BROKER_URL).flushdb()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "benchmark": "api_load",
        "machine": machine(),
        "setup": {
            "server": "tunefarm serve (uvicorn, "
            f"{args.api_workers or Settings().api_workers} process(es)) on loopback",
            "client_connections": CONNECTIONS,
            "database": "PostgreSQL on 127.0.0.1",
            "broker": "Redis on 127.0.0.1",
            "duration_sec_per_rate": args.duration,
            "load_generator": "httpx.AsyncClient, open loop, on the same machine",
            "status_jobs": STATUS_JOBS,
        },
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"api_load-{args.label}-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"{'endpoint':<8} {'req/s':>6} {'p50 ms':>8} {'p99 ms':>8} {'achieved':>9}")
    for endpoint, rows in results.items():
        for row in rows:
            print(
                f"{endpoint:<8} {row['rate_target']:>6.0f} {row['p50_ms']:>8.2f} "
                f"{row['p99_ms']:>8.2f} {row['rate_achieved']:>9}"
            )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
