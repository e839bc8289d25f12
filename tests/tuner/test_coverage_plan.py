"""The coverage report before tuning (``tunefarm plan``), against a real database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from sqlalchemy import create_engine, delete, func, select

from tunefarm.tuner.compile_job import CompileOptions, compile_model
from tunefarm.tuner.coverage_plan import plan_model
from tunefarm.tuner.job_spec import JobSpec
from tunefarm.tuner.sample_models import tiny_cnn
from tunefarm.tuning_db.schema import TuningRecordRow, WorkloadRow

TUNEFARM = [sys.executable, "-m", "tunefarm"]


@pytest.fixture(scope="module")
def tuned_database(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, dict]:  # type: ignore[type-arg]
    """tiny_cnn at 32x32, tuned a little into a fresh SQLite file; and its manifest."""
    directory = tmp_path_factory.mktemp("plan")
    model = directory / "tiny32.onnx"
    onnx.save(tiny_cnn(image_size=32), str(model))
    url = f"sqlite:///{directory / 'records.db'}"
    manifest = compile_model(
        CompileOptions(
            model_path=model,
            spec=JobSpec.of("llvm", 12, seed=3),
            out_dir=directory / "out",
            database_url=url,
            latency_samples=5,
        )
    ).manifest
    return url, model, manifest


def test_a_tuned_model_plans_as_covered_with_the_databases_best_times(
    tuned_database: tuple[str, Path, dict],  # type: ignore[type-arg]
) -> None:
    url, model, _ = tuned_database
    plan = plan_model(model, JobSpec.of("llvm", 40), database_url=url).as_dict()
    engine = create_engine(url)
    with engine.connect() as connection:
        best = dict(
            connection.execute(
                select(WorkloadRow.key, func.min(TuningRecordRow.mean_run_sec))
                .join(TuningRecordRow, TuningRecordRow.workload_id == WorkloadRow.id)
                .group_by(WorkloadRow.key)
            ).all()
        )
    for task in plan["tasks"]:
        if task["workload_key"] in best and best[task["workload_key"]] is not None:
            assert task["reuse"] == "exact", task
            # the plan rounds to 3 decimals of a µs
            expected = best[task["workload_key"]] * 1e6
            assert task["best_latency_us"] == pytest.approx(expected, rel=1e-3, abs=1e-3)
        else:
            assert task["reuse"] in ("similar", "none"), task
    covered = [task for task in plan["tasks"] if task["reuse"] == "exact"]
    assert plan["tasks_covered"] == len(covered)
    # Covered or not, the budget is planned: a covered model is tuned on where the time is.
    assert plan["trial_budget"] == 40
    assert sum(task["planned_trials"] for task in plan["tasks"]) == 40
    assert all(task["measured"] >= 1 for task in covered)


def test_the_plan_is_exact_on_a_model_partly_in_the_database(
    tuned_database: tuple[str, Path, dict],  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    url, model, _ = tuned_database
    # A copy of the database without the conv task's records: the model is partly covered.
    copy = tmp_path / "partial.db"
    # The backup API, not a file copy: the database runs in WAL mode.
    with sqlite3.connect(url.removeprefix("sqlite:///")) as source, sqlite3.connect(copy) as dest:
        source.backup(dest)
    partial_url = f"sqlite:///{copy}"
    before = plan_model(model, JobSpec.of("llvm", 40), database_url=partial_url).as_dict()
    conv = next(task for task in before["tasks"] if "conv2d" in task["name"])
    assert conv["reuse"] == "exact"
    engine = create_engine(partial_url)
    with engine.begin() as connection:
        workload_id = connection.execute(
            select(WorkloadRow.id).where(WorkloadRow.key == conv["workload_key"])
        ).scalar_one()
        connection.execute(
            delete(TuningRecordRow).where(TuningRecordRow.workload_id == workload_id)
        )

    plan = plan_model(
        model, JobSpec.of("llvm", 40, max_trials_per_task=16), database_url=partial_url
    ).as_dict()
    by_name = {task["name"]: task for task in plan["tasks"]}
    assert by_name[conv["name"]]["reuse"] == "none"
    assert by_name[conv["name"]]["best_latency_us"] is None
    exact = [task for task in before["tasks"] if task["reuse"] == "exact"]
    still_covered = [task for task in exact if task["name"] != conv["name"]]
    for task in still_covered:
        assert by_name[task["name"]]["reuse"] == "exact"
        assert by_name[task["name"]]["best_latency_us"] == task["best_latency_us"]
    weighted = {task["name"]: task["flops"] * task["weight"] for task in plan["tasks"]}
    total = sum(weighted.values())
    assert plan["tasks_covered"] == len(still_covered)
    assert plan["tasks_total"] == len(before["tasks"])
    assert plan["tasks_percent"] == round(100 * len(still_covered) / len(plan["tasks"]), 2)
    assert plan["flops_percent"] == round(
        100 * sum(weighted[t["name"]] for t in still_covered) / total, 2
    )
    assert plan["tasks_by_reuse"]["exact"] == len(still_covered)
    planned = [task["planned_trials"] for task in plan["tasks"]]
    assert plan["trial_budget"] == sum(planned) <= 40
    assert max(planned) <= 16  # --max-trials-per-task
    # The conv lost its records: it has the most to gain and is priced by its FLOPs.
    assert by_name[conv["name"]]["planned_trials"] == 16
    assert by_name[conv["name"]]["measured"] == 0


def test_a_model_of_other_shapes_plans_as_similar(
    tuned_database: tuple[str, Path, dict],  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    url, _, _ = tuned_database
    sibling = tmp_path / "tiny16.onnx"
    onnx.save(tiny_cnn(image_size=16), str(sibling))
    plan = plan_model(sibling, JobSpec.of("llvm", 40), database_url=url).as_dict()
    assert plan["tasks_covered"] == 0
    conv = next(task for task in plan["tasks"] if "conv2d" in task["name"])
    assert conv["reuse"] == "similar"
    assert conv["distance"] > 0
    assert conv["neighbours"] >= 1
    assert plan["trial_budget"] == 40


def test_the_plan_command_prints_the_report_and_its_json(
    tuned_database: tuple[str, Path, dict],  # type: ignore[type-arg]
) -> None:
    url, model, _ = tuned_database
    as_json = subprocess.run(
        [*TUNEFARM, "plan", str(model), "--target", "llvm", "--db", url, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert as_json.returncode == 0, as_json.stderr
    plan = json.loads(as_json.stdout)
    assert plan["tasks_total"] == len(plan["tasks"])
    table = subprocess.run(
        [*TUNEFARM, "plan", str(model), "--target", "llvm", "--db", url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert table.returncode == 0, table.stderr
    assert f"trial budget: {plan['trial_budget']}" in table.stdout
    assert f"covered: {plan['tasks_covered']} of {plan['tasks_total']} tasks" in table.stdout


def test_the_plan_command_rejects_a_bad_target_and_a_bad_model(tmp_path: Path) -> None:
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), str(model))
    bad_target = subprocess.run(
        [*TUNEFARM, "plan", str(model), "--target", "tpu", "--db", f"sqlite:///{tmp_path}/x.db"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad_target.returncode == 2
    assert "tpu" in bad_target.stderr and "Traceback" not in bad_target.stderr
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    bad_model = subprocess.run(
        [*TUNEFARM, "plan", str(garbage), "--db", f"sqlite:///{tmp_path}/x.db"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad_model.returncode == 2
    assert "garbage.onnx" in bad_model.stderr and "Traceback" not in bad_model.stderr


def test_a_budget_that_leaves_new_tasks_without_trials_says_so(tmp_path: Path) -> None:
    model = tmp_path / "tiny32.onnx"
    onnx.save(tiny_cnn(image_size=32), str(model))
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    small = plan_model(model, JobSpec.of("llvm", 8), database_url=url)
    plan = small.as_dict()
    assert plan["tasks_by_reuse"]["none"] == plan["tasks_total"] > 1
    # 8 trials make one search; the tasks with no FLOPs (transposes) never get trials.
    worth_trials = [task for task in plan["tasks"] if task["flops"] > 0]
    assert len(worth_trials) > 1
    assert plan["uncovered_without_trials"] == len(worth_trials) - 1
    assert plan["first_round_trials"] >= 8 * len(worth_trials)
    assert f"need --trials {plan['first_round_trials']} or more" in small.summary()
    enough = plan_model(model, JobSpec.of("llvm", plan["first_round_trials"]), database_url=url)
    assert enough.as_dict()["uncovered_without_trials"] == 0
    assert "get no trial" not in enough.summary()
    # And it is the smallest such budget.
    short = plan_model(model, JobSpec.of("llvm", plan["first_round_trials"] - 1), database_url=url)
    assert short.as_dict()["uncovered_without_trials"] > 0
