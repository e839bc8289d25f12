"""The in-model kernel profile is a report: a library that cannot load gives a reason."""

from __future__ import annotations

from typing import Any

from tunefarm.tuner.kernel_profile import in_model_profile
from tunefarm.tuner.targets import parse_target


def test_a_build_that_fails_gives_a_reason_not_an_exception() -> None:
    def load() -> Any:
        raise RuntimeError("the profiling build failed\nCheck failed: no kernel")

    reason = in_model_profile(load, target=parse_target("llvm"), inputs=[])
    assert reason == "RuntimeError: Check failed: no kernel"
