"""Chaos rounds (issue 21): a farm under a steady stream of small jobs, one fault per round.

The farm is real and the bench's own: `tunefarm serve`, 2 coordinators (`tunefarm worker
--jobs`) and 2 measure workers (`tunefarm worker --target llvm`), on a PostgreSQL cluster made
with `initdb`/`pg_ctl` in a temporary folder and a `redis-server` started here, so the machine's
shared servers are never touched. A submitter sends a small job (the sample CNN, a few trials)
every ``--submit-every`` seconds, and a poller reads job statuses all the time, tallying the
API's answers by the fault in progress. Each round injects one fault:

- ``worker``: kill -9 of a measure worker, which a supervisor restarts at once;
- ``coordinator``: kill -9 of a coordinator, restarted at once (its job's lease runs out and
  another coordinator resumes it);
- ``redis``: redis-server killed and started again without its data (the queues are lost; the
  rows in PostgreSQL are the truth, and the reaper sends lost jobs again);
- ``postgres``: the cluster stopped (immediate) for ``--outage-sec``, then started.

A round heals when a probe job submitted after the fault has succeeded; the time from the
fault to then is the round's heal time. At the end every job must reach a final state.
Reported: jobs submitted, succeeded, failed (with their reasons), lost (goal 0); duplicate
records (goal 0); the API's answers during each fault by status code (goal: no 500); heal times.

    .venv/bin/python bench/chaos.py --rounds 1              # one round of each fault (~6 min)
    TUNEFARM_CHAOS_ROUNDS=20 .venv/bin/python bench/chaos.py  # the long run
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_load import free_port, machine, start_api

from tunefarm.api.services.teams import create_team
from tunefarm.tuner.sample_models import write_sample
from tunefarm.tuning_db.schema import TuningRecordRow
from tunefarm.tuning_db.sql_database import open_engine

FAULTS = ("worker", "coordinator", "redis", "postgres")
FINAL = {"succeeded", "failed", "cancelled"}
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")
"""A restart loses every queue: the worst case the rows in PostgreSQL must cover."""


def _run_as_postgres() -> list[str]:
    # PostgreSQL refuses to run as root; Debian's image has a postgres user for it.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class Postgres:
    """A cluster of our own: initdb in ``folder``, trust auth, one port on loopback."""

    def __init__(self, folder: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            raise SystemExit("chaos: no PostgreSQL binaries (/usr/lib/postgresql/*/bin)")
        self.bin = Path(found[-1]).parent
        self.data = folder / "pg"
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
        self._as(
            self.bin / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        self.start()
        self._as(
            self.bin / "createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", "tunefarm"
        )
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/tunefarm"

    def _as(self, *args: object) -> None:
        subprocess.run(
            [*_run_as_postgres(), *(str(a) for a in args)], check=True, capture_output=True
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        log = self.data.parent / "pg.log"
        self._as(self.bin / "pg_ctl", "-D", self.data, "-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        self._as(self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")


class Redis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"), *NO_PERSISTENCE],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise SystemExit("chaos: redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


class Farm:
    """The API, 2 coordinators and 2 measure workers, each restartable."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = {**os.environ, **env}
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.url = f"http://127.0.0.1:{env['TUNEFARM_API_PORT']}"
        for name in ("coordinator-1", "coordinator-2", "worker-1", "worker-2", "api"):
            self.start(name)

    def start(self, name: str) -> None:
        if name == "api":  # waits for /healthz, as the load bench does
            self.processes[name] = start_api(self.env, self.folder / "api.log", self.url)
            return
        args = {
            "coordinator-1": ["worker", "--jobs"],
            "coordinator-2": ["worker", "--jobs"],
            "worker-1": ["worker", "--target", "llvm"],
            "worker-2": ["worker", "--target", "llvm"],
        }[name]
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "tunefarm", *args],
            stdout=(self.folder / f"{name}.log").open("a"),
            stderr=subprocess.STDOUT,
            env=self.env,
            text=True,
        )

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Traffic:
    """The submitter and the status poller; the API's answers are tallied by current fault."""

    def __init__(self, client: httpx.Client, model_id: str, every_sec: float, trials: int) -> None:
        self.client = client
        self.model_id = model_id
        self.every_sec = every_sec
        self.trials = trials
        self.fault = "none"
        self.answers: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.jobs: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._submit_loop, daemon=True),
            threading.Thread(target=self._poll_loop, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _tally(self, answer: str) -> None:
        with self.lock:
            self.answers[self.fault][answer] += 1

    def submit(self) -> str | None:
        try:
            response = self.client.post(
                "/v1/jobs",
                json={"model_id": self.model_id, "target": "llvm", "trials": self.trials},
            )
        except httpx.HTTPError as err:
            self._tally(f"no answer ({type(err).__name__})")
            return None
        self._tally(str(response.status_code))
        if response.status_code != 201:
            return None
        job_id: str = response.json()["id"]
        with self.lock:
            self.jobs.append(job_id)
        return job_id

    def _submit_loop(self) -> None:
        while not self.stop.wait(self.every_sec):
            self.submit()

    def _poll_loop(self) -> None:
        while not self.stop.wait(0.25):
            with self.lock:
                job_id = self.jobs[-1] if self.jobs else None
            if job_id is None:
                continue
            try:
                self._tally(str(self.client.get(f"/v1/jobs/{job_id}").status_code))
            except httpx.HTTPError as err:
                self._tally(f"no answer ({type(err).__name__})")

    def state(self, job_id: str) -> tuple[str | None, str | None]:
        try:
            response = self.client.get(f"/v1/jobs/{job_id}")
        except httpx.HTTPError:
            return None, None
        if response.status_code != 200:
            return None, None
        body = response.json()
        error = body["error"]["message"] if body.get("error") else None
        return str(body["state"]), error

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def inject(
    fault: str, farm: Farm, pg: Postgres, broker: Redis, round_no: int, outage_sec: float
) -> None:
    if fault == "worker":
        name = f"worker-{round_no % 2 + 1}"
        farm.kill(name)
        farm.start(name)  # a supervisor's restart
    elif fault == "coordinator":
        name = f"coordinator-{round_no % 2 + 1}"
        farm.kill(name)
        farm.start(name)
    elif fault == "redis":
        broker.kill()
        time.sleep(1.0)
        broker.start()
    elif fault == "postgres":
        pg.stop()
        time.sleep(outage_sec)
        pg.start()
    else:
        raise ValueError(fault)


def heal_time(traffic: Traffic, since: float, timeout_sec: float) -> float | None:
    """Seconds from ``since`` until a probe job submitted now has succeeded."""
    deadline = time.monotonic() + timeout_sec
    probe = None
    while probe is None and time.monotonic() < deadline:
        probe = traffic.submit()
        if probe is None:
            time.sleep(1.0)
    while probe is not None and time.monotonic() < deadline:
        state, _ = traffic.state(probe)
        if state == "succeeded":
            return round(time.monotonic() - since, 1)
        if state in FINAL:  # failed or cancelled: not healed by this probe; send another
            probe = traffic.submit()
        time.sleep(0.5)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=int(os.environ.get("TUNEFARM_CHAOS_ROUNDS", "1"))
    )
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--submit-every", type=float, default=3.0)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--outage-sec", type=float, default=5.0)
    parser.add_argument("--heal-timeout", type=float, default=240.0)
    parser.add_argument(
        "--stall-sec", type=float, default=300.0, help="at the end: lost if no job ends this long"
    )
    parser.add_argument("--label", default="vm")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    faults = [fault for fault in args.faults.split(",") if fault]
    started = datetime.now(timezone.utc)

    scratch = Path(tempfile.mkdtemp(prefix="tunefarm-chaos-"))
    scratch.chmod(0o755)  # the postgres user reaches its cluster folder through it
    pg = Postgres(scratch / "postgres")
    broker = Redis()
    env = {
        "TUNEFARM_DATABASE_URL": pg.url,
        "TUNEFARM_BROKER_URL": broker.url,
        "TUNEFARM_DATA_DIR": str(scratch / "data"),
        "TUNEFARM_API_PORT": str(free_port()),
        "TUNEFARM_API_WORKERS": "1",
        "TUNEFARM_JOB_LEASE_SEC": "10",
        "TUNEFARM_JOB_RESEND_SEC": "20",
        "TUNEFARM_MEASURE_TIMEOUT_SEC": "60",
    }
    _team, token = create_team(open_engine(pg.url), "chaos")
    farm = Farm(scratch, env)
    rounds: list[dict[str, Any]] = []
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / f"chaos-{args.label}-{started:%Y%m%dT%H%M%SZ}.partial.json"
    try:
        with httpx.Client(
            base_url=farm.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client:
            model = write_sample("tiny-cnn", scratch / "tiny_cnn.onnx")
            uploaded = client.post("/v1/models", files={"file": (model.name, model.read_bytes())})
            uploaded.raise_for_status()
            traffic = Traffic(client, uploaded.json()["id"], args.submit_every, args.trials)
            first = heal_time(traffic, time.monotonic(), args.heal_timeout)
            print(f"farm up; first job in {first} s", flush=True)
            for round_no in range(args.rounds):
                for fault in faults:
                    time.sleep(args.submit_every * 2)  # some jobs in flight
                    traffic.fault = fault
                    at = time.monotonic()
                    inject(fault, farm, pg, broker, round_no, args.outage_sec)
                    healed = heal_time(traffic, at, args.heal_timeout)
                    traffic.fault = "none"
                    rounds.append({"round": round_no, "fault": fault, "heal_sec": healed})
                    print(f"round {round_no} {fault}: healed in {healed} s", flush=True)
                    # So far, for a long run cut short (the jobs are counted at the end).
                    partial.write_text(
                        json.dumps(
                            {
                                "partial": True,
                                "submitted": len(traffic.jobs),
                                "api_answers_by_fault": traffic.answers,
                                "rounds": rounds,
                            },
                            indent=1,
                        )
                    )
            traffic.finish()
            # Every job must end. A backlog may still be draining: wait while jobs keep
            # finishing; a job is lost if none has finished for ``--stall-sec``.
            outcomes: dict[str, tuple[str | None, str | None]] = {}
            pending = list(traffic.jobs)
            last_progress = time.monotonic()
            while pending and time.monotonic() - last_progress < args.stall_sec:
                for job_id in list(pending):
                    state, error = traffic.state(job_id)
                    outcomes[job_id] = (state, error)
                    if state in FINAL:
                        pending.remove(job_id)
                        last_progress = time.monotonic()
                if pending:
                    time.sleep(2)
        engine = open_engine(pg.url)
        with engine.connect() as connection:
            duplicates = connection.execute(
                select(func.count()).select_from(
                    select(TuningRecordRow.workload_id)
                    .group_by(
                        TuningRecordRow.workload_id,
                        TuningRecordRow.target_key,
                        TuningRecordRow.trace_hash,
                    )
                    .having(func.count() > 1)
                    .subquery()
                )
            ).scalar_one()
            records = connection.execute(select(func.count(TuningRecordRow.id))).scalar_one()
    finally:
        farm.stop_all()
        broker.kill()
        try:
            pg.stop()
        except subprocess.CalledProcessError:
            pass
    states = collections.Counter(state or "unknown" for state, _ in outcomes.values())
    reasons = collections.Counter(error for state, error in outcomes.values() if state == "failed")
    heals = {fault: [r["heal_sec"] for r in rounds if r["fault"] == fault] for fault in faults}
    result = {
        "benchmark": "chaos",
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "farm": "tunefarm serve (1 process), 2 coordinators, 2 measure workers (llvm); "
        "PostgreSQL and redis-server of the bench's own",
        "jobs": {
            "submitted": len(outcomes),
            "succeeded": states.get("succeeded", 0),
            "failed": states.get("failed", 0),
            "cancelled": states.get("cancelled", 0),
            "lost": sum(count for state, count in states.items() if state not in FINAL),
            "failure_reasons": dict(reasons),
        },
        "records": records,
        "duplicate_records": duplicates,
        "api_answers_by_fault": {fault: dict(count) for fault, count in traffic.answers.items()},
        "heal_sec": {
            fault: {
                "rounds": times,
                "healed": sum(t is not None for t in times),
                "median": statistics.median([t for t in times if t is not None])
                if any(t is not None for t in times)
                else None,
                "max": max((t for t in times if t is not None), default=None),
            }
            for fault, times in heals.items()
        },
        "rounds": rounds,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"chaos-{args.label}-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    partial.unlink(missing_ok=True)
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("jobs", "duplicate_records", "api_answers_by_fault", "heal_sec")
            },
            indent=1,
        )
    )
    print(f"wrote {path}")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0 if result["jobs"]["lost"] == 0 and duplicates == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
