"""The trial budget follows the model's time and each task's room to improve."""

from __future__ import annotations

from tunefarm.tuner.trial_budget import (
    MIN_TASK_TRIALS,
    TaskOutlook,
    allocate_trials,
    estimated_times,
)


def _task(name: str, best_us: float | None, *, weight: int = 1, flops: float = 1e6, spent: int = 0):  # type: ignore[no-untyped-def]
    return TaskOutlook(name, weight, flops, None if best_us is None else best_us * 1e-6, spent)


def test_a_dominant_task_gets_most_of_the_trials() -> None:
    tasks = [_task("conv", 900.0), _task("pool", 50.0), _task("concat", 30.0), _task("fc", 20.0)]
    shares = allocate_trials(tasks, 200)
    assert sum(shares.values()) == 200
    assert shares["conv"] >= 0.85 * 200
    assert shares["concat"] == 0  # 3% of the time is not worth a search of 6 trials


def test_weight_counts_as_often_as_the_task_runs() -> None:
    shares = allocate_trials([_task("once", 100.0), _task("five_times", 100.0, weight=5)], 120)
    assert shares["five_times"] == 100 and shares["once"] == 20


def test_trials_already_spent_lower_a_claim() -> None:
    fresh = allocate_trials([_task("a", 100.0), _task("b", 100.0)], 100)
    assert fresh["a"] == fresh["b"] == 50
    tuned = allocate_trials([_task("a", 100.0, spent=640), _task("b", 100.0)], 100)
    assert tuned["b"] > 2 * tuned["a"] > 0


def test_unmeasured_tasks_are_priced_at_the_measured_rate() -> None:
    tasks = [_task("measured", 100.0, flops=1e6), _task("new", None, flops=3e6)]
    times = estimated_times(tasks)
    assert times["new"] == 3 * times["measured"]
    shares = allocate_trials(tasks, 100)
    assert shares["new"] == 75


def test_never_more_than_the_total_nor_the_cap() -> None:
    tasks = [_task(f"t{i}", 10.0 * (i + 1)) for i in range(12)]
    for total in (0, 1, 5, 7, 64, 1000):
        shares = allocate_trials(tasks, total, max_per_task=40)
        assert sum(shares.values()) <= total
        assert max(shares.values()) <= 40
        if total >= MIN_TASK_TRIALS:
            assert all(share == 0 or share >= MIN_TASK_TRIALS for share in shares.values())
    # A budget too small for any search goes to the heaviest task whole.
    assert allocate_trials(tasks, 5) == {**{f"t{i}": 0 for i in range(11)}, "t11": 5}


def test_a_task_with_nothing_to_gain_gets_nothing() -> None:
    shares = allocate_trials([_task("layout", None, flops=0.0), _task("conv", 100.0)], 32)
    assert shares == {"layout": 0, "conv": 32}
