"""What a user asks of a compile: one typed spec for the Python API, the CLI, ``POST /v1/jobs``,
the job row and the coordinator (issue 18).

The spec holds only the user's choices. Where the model is, where the library goes, which
database and how many processes are the running host's business (``CompileOptions``).

The target stays the user's text: a CPU target without ``mcpu`` means the CPU of the host that
tunes it, so the text travels and each host parses it, once, when the spec is made.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tunefarm.tuner.errors import TargetError, UserInputError

if TYPE_CHECKING:
    from tvm.target import Target

Layout = Literal["auto", "NCHW", "NHWC"]

MAX_TRIALS = 1_000_000


class JobOptions(BaseModel):
    """The choices beyond the target and the trial budget (the API's ``options``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fp16: bool = False
    """Convert to float16 mixed precision."""
    layout: Layout = "auto"
    vendor_kernels: bool = False
    """CUDA: run convolutions and matmuls with cuDNN and cuBLASLt (needs ``tunefarm[vendor]``)."""
    tf32: bool = False
    """With ``vendor_kernels``: fp32 vendor calls may round to TF32 on the tensor cores, as
    torch's cuDNN convolutions do by default. Off, fp32 stays exact."""
    max_trials_per_task: int | None = Field(default=None, ge=1, le=MAX_TRIALS)
    """Cap per task; ``None``: an even share of the trials."""
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    cuda_graph: bool | None = None
    """Replay the model as one CUDA graph; ``None`` means on for CUDA targets."""
    warm_start: bool = True
    """Seed the search of a task with no record from the records of similar workloads."""
    baseline: bool = True
    """Report the untuned baseline (measured once per model, target and pipeline)."""

    @field_validator("layout", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        # --layout nhwc, NHWC and Auto all mean what they say.
        if isinstance(value, str) and value.upper() in ("NCHW", "NHWC", "AUTO"):
            return "auto" if value.upper() == "AUTO" else value.upper()
        return value

    @model_validator(mode="after")
    def _tf32_needs_vendor_kernels(self) -> JobOptions:
        if self.tf32 and not self.vendor_kernels:
            # TVM's own kernels have no TF32: the option would change nothing.
            raise ValueError("--tf32 applies to vendor kernels only: add --vendor-kernels")
        return self


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(
        default="llvm",
        min_length=1,
        max_length=2000,
        description="llvm, cuda, 'cuda -arch=sm_90', or TVM target JSON.",
        examples=["llvm"],
    )
    trials: int = Field(
        default=64, ge=0, le=MAX_TRIALS, description="Total tuning trials; 0 builds only."
    )
    options: JobOptions = Field(default_factory=JobOptions)

    @model_validator(mode="after")
    def _parse_target(self) -> JobSpec:
        try:
            _parsed(self.target)
        except TargetError as err:
            # A ValueError: pydantic reports it as this field's error (422 in the API).
            raise ValueError(str(err)) from err
        return self

    @property
    def tvm_target(self) -> Target:
        return _parsed(self.target)

    @classmethod
    def of(cls, target: str, trials: int, **options: Any) -> JobSpec:
        """The spec from Python or CLI arguments; bad ones raise ``UserInputError``, in the
        CLI's words (``--max-trials-per-task: Input should be ...``)."""
        try:
            return cls(target=target, trials=trials, options=JobOptions(**options))
        except ValidationError as err:
            raise UserInputError(_as_flags(err)) from None

    @classmethod
    def from_row(cls, stored: dict[str, Any]) -> JobSpec:
        """The spec of a job row. Rows written before the spec had the options beside the
        target and trials; the jobs of a running farm keep working."""
        if "options" not in stored:
            stored = {
                "target": stored.get("target", ""),
                "trials": stored.get("trials", 0),
                "options": {
                    key: value
                    for key, value in stored.items()
                    if key in JobOptions.model_fields and value is not None
                },
            }
        return cls.model_validate(stored)


@functools.lru_cache(maxsize=64)
def _parsed(text: str) -> Target:
    """Each target text is parsed once per process (it reads the host's CPU or GPU). TVM is
    imported here, not with the module: the CLI's other commands start without it."""
    from tunefarm.tuner.targets import parse_target

    return parse_target(text)


def _as_flags(err: ValidationError) -> str:
    problems = []
    for problem in err.errors():
        field = str(problem["loc"][-1]) if problem["loc"] else ""
        flag = "--" + field.replace("_", "-") if field else "the job spec"
        message = problem["msg"].removeprefix("Value error, ")
        problems.append(message if field == "target" or not field else f"{flag}: {message}")
    return "; ".join(problems)
