from __future__ import annotations

import pytest

from tunefarm.tuner.errors import TargetError
from tunefarm.tuner.targets import parse_target


@pytest.mark.parametrize(
    ("text", "kind", "attrs"),
    [
        ("llvm", "llvm", {}),
        ("llvm -mcpu=skylake -num-cores=4", "llvm", {"mcpu": "skylake", "num-cores": 4}),
        ("cuda -arch=sm_90", "cuda", {"arch": "sm_90"}),
        ('{"kind": "cuda", "arch": "sm_80"}', "cuda", {"arch": "sm_80"}),
        ('{"kind": "llvm", "num-cores": 3}', "llvm", {"num-cores": 3}),
    ],
)
def test_friendly_and_json_targets(text: str, kind: str, attrs: dict[str, object]) -> None:
    target = parse_target(text)
    assert target.kind.name == kind
    for key, value in attrs.items():
        assert target.attrs[key] == value


def test_cpu_targets_get_host_cpu_and_cores() -> None:
    target = parse_target("llvm")
    assert target.attrs["mcpu"]
    assert int(target.attrs["num-cores"]) >= 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tpu", "unknown target kind 'tpu'"),
        ("", "the target is empty"),
        ("{nope", "does not parse"),
        ("[1, 2]", "must be an object"),
        ("cuda arch=sm_90", "write options as -key=value"),
    ],
)
def test_bad_targets_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        parse_target(text)
