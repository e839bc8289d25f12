"""One typed job spec (issue 18): the CLI's words for bad values, the API's body, old job rows."""

from __future__ import annotations

import pytest

from tunefarm.api.schemas import JobSubmit
from tunefarm.tuner.errors import UserInputError
from tunefarm.tuner.job_spec import JobOptions, JobSpec


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"trials": -1}, "--trials: Input should be greater than or equal to 0"),
        ({"max_trials_per_task": 0}, "--max-trials-per-task: Input should be greater than"),
        ({"layout": "NWHC"}, "--layout: Input should be 'auto', 'NCHW' or 'NHWC'"),
        ({"target": "gpu"}, "unknown target kind 'gpu'; tunefarm supports llvm, cuda"),
        ({"turbo": True}, "--turbo: Extra inputs are not permitted"),
    ],
)
def test_a_bad_value_is_a_user_error_in_the_clis_words(
    arguments: dict[str, object], message: str
) -> None:
    target = str(arguments.pop("target", "llvm"))
    trials = int(arguments.pop("trials", 8))  # type: ignore[call-overload]
    with pytest.raises(UserInputError) as raised:
        JobSpec.of(target, trials, **arguments)
    assert message in str(raised.value)


def test_the_spec_round_trips_through_the_job_row_and_keeps_its_parsed_target() -> None:
    spec = JobSpec.of("llvm", 12, layout="NCHW", seed=3, cuda_graph=False, warm_start=False)
    again = JobSpec.from_row(spec.model_dump(mode="json"))
    assert again == spec
    assert again.tvm_target is spec.tvm_target  # parsed once per process
    assert again.tvm_target.kind.name == "llvm"


def test_a_row_written_before_the_spec_still_reads() -> None:
    # The options used to sit beside the target and trials, with None for the unset ones.
    spec = JobSpec.from_row(
        {"target": "llvm", "trials": 4, "layout": "NHWC", "fp16": False, "seed": None}
    )
    assert spec.trials == 4
    assert spec.options == JobOptions(layout="NHWC")


def test_the_apis_job_body_is_the_spec_with_a_model() -> None:
    body = JobSubmit.model_validate(
        {"model_id": "m", "target": "llvm", "trials": 3, "options": {"layout": "NCHW"}}
    )
    assert isinstance(body, JobSpec)
    spec = JobSpec.model_validate(body.model_dump(exclude={"model_id"}))
    assert spec.options.layout == "NCHW" and spec.trials == 3


def test_the_layout_is_read_in_any_case() -> None:
    assert JobSpec.of("llvm", 1, layout="nhwc").options.layout == "NHWC"
    assert JobSpec.of("llvm", 1, layout="Nchw").options.layout == "NCHW"
    assert JobSpec.of("llvm", 1, layout="AUTO").options.layout == "auto"


def test_tf32_is_refused_without_vendor_kernels_and_kept_with_them() -> None:
    with pytest.raises(UserInputError, match="--vendor-kernels"):
        JobSpec.of("cuda", 0, tf32=True)
    spec = JobSpec.of("cuda", 0, tf32=True, vendor_kernels=True)
    assert JobSpec.model_validate_json(spec.model_dump_json()).options.tf32
