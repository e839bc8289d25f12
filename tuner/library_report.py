"""After the build: what the library is worth, for the manifest and the CLI's summary.

- the library's own latency (time-boxed, see ``latency.time_calls``);
- its outputs against ONNX Runtime's on the same random inputs;
- ONNX Runtime's latency on this machine, timed the same way, and the ratio ours/theirs;
- the untuned baseline: the model built without any record, measured once per (model, target
  fingerprint, pipeline) and then read from the database.

Only the first is required. The other three are reports, not gates: when one cannot run (ONNX
Runtime has no kernel for an old opset, the untuned build fails, ...) the report says which one
and why in one line, and the compile succeeds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tvm
from pydantic import TypeAdapter
from sqlalchemy.exc import SQLAlchemyError
from tvm.target import Target

from tunefarm.tuner import build
from tunefarm.tuner.latency import (
    LatencyReport,
    LoadedModel,
    TimeBox,
    max_abs_difference,
    random_inputs,
    time_calls,
)
from tunefarm.tuner.model_validation import ValidatedModel
from tunefarm.tuner.pipelines import PipelineResult
from tunefarm.tuning_db.baseline_cache import (
    BaselineKey,
    StoredBaseline,
    find_baseline,
    store_baseline,
)
from tunefarm.tuning_db.sql_database import SqlDatabase

logger = logging.getLogger(__name__)

UNTUNED_BUILD_VERSION = 1
"""Part of a cached baseline's key. Bump it when ``build.compile_untuned`` changes what it builds,
so that baselines of the old build are measured again."""

ReportName = Literal["check_vs_onnxruntime", "baseline", "vs_onnxruntime"]
BaselineSource = Literal["measured now", "cached", "skipped", "not measured"]

_PEER_PROVIDERS = {"llvm": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
"""The ONNX Runtime execution provider that runs where a target's code runs."""


@dataclass(frozen=True)
class ReportSettings:
    timer: TimeBox = field(default_factory=TimeBox)
    baseline: bool = True
    """Measure (or read) the untuned baseline; ``--no-baseline`` skips it."""
    seed: int = 0
    """Seed of the random inputs."""
    fp16: bool = False
    cuda_graph: bool = False


@dataclass(frozen=True)
class Baseline:
    """Where the untuned latency comes from."""

    source: BaselineSource
    reason: str | None = None
    """Why it was skipped or not measured."""
    measured_on: str | None = None
    measured_at: str | None = None
    """ISO 8601, UTC."""


@dataclass(frozen=True)
class LatencySection:
    tuned: LatencyReport
    """The library's own latency (the tuned build, whatever the database had)."""
    untuned: LatencyReport | None
    baseline: Baseline


@dataclass(frozen=True)
class OutputCheck:
    max_abs_diff: float | None
    """Largest output difference against ONNX Runtime (CPU) on the same random inputs."""
    not_checked: str | None = None
    inconclusive: str | None = None
    """Why a small difference proves nothing here: the reference output is constant, or it
    does not change with the input (placeholder weights can do both)."""


@dataclass(frozen=True)
class PeerTiming:
    """ONNX Runtime on this machine, same inputs, same timer."""

    peer: str
    """``onnxruntime <version>``."""
    provider: str | None
    latency: LatencyReport | None = None
    ratio_p50: float | None = None
    """Our p50 over ONNX Runtime's: below 1 means the library is faster."""
    ratio_p99: float | None = None
    not_measured: str | None = None


@dataclass(frozen=True)
class NotRun:
    report: ReportName
    reason: str


@dataclass(frozen=True)
class LibraryReport:
    """What a compile measured after the build. Its fields are the manifest's keys."""

    latency: LatencySection
    speedup_p50: float | None
    """Untuned p50 over tuned p50; None without a baseline."""
    check_vs_onnxruntime: OutputCheck
    vs_onnxruntime: PeerTiming

    @property
    def not_run(self) -> list[NotRun]:
        """The reports that did not run, and why."""
        skipped: list[NotRun] = []
        if self.check_vs_onnxruntime.not_checked is not None:
            skipped.append(NotRun("check_vs_onnxruntime", self.check_vs_onnxruntime.not_checked))
        if self.latency.baseline.reason is not None:
            skipped.append(NotRun("baseline", self.latency.baseline.reason))
        if self.vs_onnxruntime.not_measured is not None:
            skipped.append(NotRun("vs_onnxruntime", self.vs_onnxruntime.not_measured))
        return skipped

    def as_manifest(self) -> dict[str, Any]:
        """The manifest's entries: ``latency``, ``speedup_p50``, ``check_vs_onnxruntime``,
        ``vs_onnxruntime`` and ``reports_not_run``."""
        latency = self.latency
        peer = self.vs_onnxruntime
        return {
            "latency": {
                "tuned": latency.tuned.as_dict(),
                "untuned": latency.untuned.as_dict() if latency.untuned is not None else None,
                "baseline": _plain(latency.baseline),
            },
            "speedup_p50": self.speedup_p50,
            "check_vs_onnxruntime": _plain(self.check_vs_onnxruntime),
            "vs_onnxruntime": {
                **_plain(peer),
                "latency": peer.latency.as_dict() if peer.latency is not None else None,
            },
            "reports_not_run": [_plain(entry) for entry in self.not_run],
        }

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> LibraryReport:
        """Read the report back, typed, from a manifest (a farm job's, say)."""
        return _REPORT_ADAPTER.validate_python(manifest)

    def summary_lines(self) -> list[str]:
        """Two lines for the CLI's summary."""
        latency, check, peer = self.latency, self.check_vs_onnxruntime, self.vs_onnxruntime
        if latency.untuned is not None:
            untuned = f"untuned {latency.untuned.p50_ms:.3f} ms ({latency.baseline.source})"
        else:
            untuned = f"untuned {latency.baseline.source} ({latency.baseline.reason})"
        if check.max_abs_diff is not None:
            checked = f"max |diff| vs ONNX Runtime: {check.max_abs_diff:.2e}"
            if check.inconclusive is not None:
                checked += f" (inconclusive: {check.inconclusive})"
        else:
            checked = f"outputs not checked ({check.not_checked})"
        first = f"latency p50: {untuned}, tuned {latency.tuned.p50_ms:.3f} ms; {checked}"
        if peer.latency is not None:
            ours, theirs = latency.tuned, peer.latency
            second = (
                f"vs {peer.peer} ({peer.provider}): "
                f"p50 {ours.p50_ms:.3f} ms vs {theirs.p50_ms:.3f} ms ({peer.ratio_p50:.2f}x), "
                f"p99 {ours.p99_ms:.3f} ms vs {theirs.p99_ms:.3f} ms ({peer.ratio_p99:.2f}x)"
            )
        else:
            second = f"vs {peer.peer}: not measured ({peer.not_measured})"
        return [first, second]


_REPORT_ADAPTER = TypeAdapter(LibraryReport)


def report_library(
    library_path: Path,
    *,
    validated: ValidatedModel,
    pipeline: PipelineResult,
    target: Target,
    database: SqlDatabase,
    settings: ReportSettings,
    on_step: Callable[[str], None] = lambda message: None,
) -> LibraryReport:
    """Time the library at ``library_path``, check it against ONNX Runtime, time ONNX Runtime,
    and measure or read the untuned baseline of ``pipeline.mod``.

    Raises only when the library itself cannot run: everything else is a report.
    """
    inputs = random_inputs(validated.inputs, seed=settings.seed)
    loaded = LoadedModel(tvm.runtime.load_module(str(library_path)), target=target)
    started = time.perf_counter()
    outputs = loaded.run(inputs)  # also the warm-up of the timing
    tuned = loaded.latency(inputs, box=settings.timer, first_call_sec=time.perf_counter() - started)
    if validated.model is None:
        # A PyTorch program: ONNX Runtime has nothing to run, and the file names the model.
        model_bytes: bytes | None = validated.path.read_bytes()
        reason = "the model is a PyTorch program (.pt2), not ONNX"
        check = OutputCheck(None, not_checked=reason)
        peer = PeerTiming("onnxruntime", None, not_measured=reason)
    else:
        model_bytes = _serialized(validated)
        on_step("checking outputs against ONNX Runtime and timing it on the same inputs")
        check, peer = _against_onnxruntime(
            model_bytes or str(validated.path),
            validated,
            inputs,
            outputs,
            target=target,
            ours=tuned,
            box=settings.timer,
        )

    on_step("untuned baseline" if settings.baseline else "untuned baseline skipped")
    untuned, baseline = _untuned_baseline(
        hashlib.sha256(model_bytes).hexdigest() if model_bytes is not None else None,
        pipeline,
        inputs,
        target=target,
        database=database,
        settings=settings,
    )
    speedup = None
    if untuned is not None and tuned.p50_ms > 0:
        speedup = round(untuned.p50_ms / tuned.p50_ms, 3)
    return LibraryReport(
        latency=LatencySection(tuned=tuned, untuned=untuned, baseline=baseline),
        speedup_p50=speedup,
        check_vs_onnxruntime=check,
        vs_onnxruntime=peer,
    )


def peer_provider(target: Target, available: list[str]) -> tuple[str | None, str | None]:
    """The ONNX Runtime provider to time against for ``target``, or None and why not."""
    kind = target.kind.name
    provider = _PEER_PROVIDERS.get(kind)
    if provider is None:
        return None, f"ONNX Runtime has no execution provider for {kind} targets here"
    if provider not in available:
        return None, (
            f"this onnxruntime has no {provider} (it has {', '.join(available) or 'none'})"
        )
    return provider, None


def baseline_key(
    model_sha256: str, pipeline: PipelineResult, *, target_key: str, settings: ReportSettings
) -> tuple[BaselineKey, str]:
    """The cache key of an untuned baseline, and the pipeline description it hashes."""
    pipeline_json = json.dumps(
        {
            "pipeline": pipeline.pipeline,
            "phases": pipeline.phases,
            "layout": pipeline.layout,
            "fp16": settings.fp16,
            "cuda_graph": settings.cuda_graph,
            "untuned_build_version": UNTUNED_BUILD_VERSION,
        },
        sort_keys=True,
    )
    pipeline_key = hashlib.sha256(pipeline_json.encode()).hexdigest()
    return BaselineKey(model_sha256, target_key, pipeline_key), pipeline_json


def _against_onnxruntime(
    model: bytes | str,
    validated: ValidatedModel,
    inputs: list[np.ndarray],
    outputs: list[np.ndarray],
    *,
    target: Target,
    ours: LatencyReport,
    box: TimeBox,
) -> tuple[OutputCheck, PeerTiming]:
    import onnxruntime

    peer = f"onnxruntime {onnxruntime.__version__}"
    feed = {
        signature.name: array for signature, array in zip(validated.inputs, inputs, strict=True)
    }
    provider, no_provider = peer_provider(target, list(onnxruntime.get_available_providers()))
    try:
        session = _session(model, "CPUExecutionProvider")
    except Exception as err:
        reason = f"ONNX Runtime {onnxruntime.__version__} cannot load the model: {_one_line(err)}"
        _log_skipped("the output check and ONNX Runtime's timing", err)
        return OutputCheck(None, reason), PeerTiming(peer, provider, not_measured=reason)

    first_call_sec: float | None = None
    try:
        started = time.perf_counter()
        reference = [np.asarray(value) for value in session.run(None, feed)]
        first_call_sec = time.perf_counter() - started
        check = OutputCheck(
            max_abs_difference(outputs, reference),
            inconclusive=_why_inconclusive(session, validated, reference),
        )
    except Exception as err:
        _log_skipped("the output check", err)
        check = OutputCheck(None, f"ONNX Runtime could not run the model: {_one_line(err)}")

    if provider is None:
        return check, PeerTiming(peer, None, not_measured=no_provider)
    try:
        if provider == "CPUExecutionProvider":
            theirs = _time_session(session, feed, box=box, first_call_sec=first_call_sec)
        else:
            del session  # its threads would spin beside the GPU timing
            theirs = _time_on_gpu(model, provider, feed, box=box)
    except Exception as err:
        _log_skipped("ONNX Runtime's timing", err)
        reason = f"ONNX Runtime ({provider}) could not run the model: {_one_line(err)}"
        return check, PeerTiming(peer, provider, not_measured=reason)
    return check, PeerTiming(
        peer,
        provider,
        latency=theirs,
        ratio_p50=_ratio(ours.p50_ms, theirs.p50_ms),
        ratio_p99=_ratio(ours.p99_ms, theirs.p99_ms),
    )


def _session(model: bytes | str, provider: str) -> Any:
    """A session on ``model``: its bytes, or the path of a model too large to serialize."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # Errors come back to us as exceptions and go into the report; ONNX Runtime's own
    # warnings about old opsets would only clutter the console.
    options.log_severity_level = 4
    providers: list[str] = [provider]
    if provider != "CPUExecutionProvider":
        providers.append("CPUExecutionProvider")
    return onnxruntime.InferenceSession(model, options, providers=providers)


def _time_session(
    session: Any, feed: dict[str, np.ndarray], *, box: TimeBox, first_call_sec: float | None
) -> LatencyReport:
    return time_calls(lambda: session.run(None, feed), box=box, first_call_sec=first_call_sec)


def _time_on_gpu(
    model: bytes | str, provider: str, feed: dict[str, np.ndarray], *, box: TimeBox
) -> LatencyReport:
    """Time ONNX Runtime on the GPU with inputs and outputs bound on the device, as ours are."""
    import onnxruntime

    session = _session(model, provider)
    if session.get_providers()[0] != provider:
        raise RuntimeError(f"{provider} did not start; the session fell back to the CPU")
    binding = session.io_binding()
    for name, array in feed.items():
        binding.bind_ortvalue_input(
            name, onnxruntime.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
        )
    for output in session.get_outputs():
        binding.bind_output(output.name, "cuda", 0)
    return time_calls(lambda: session.run_with_iobinding(binding), box=box)


def _untuned_baseline(
    model_sha256: str | None,
    pipeline: PipelineResult,
    inputs: list[np.ndarray],
    *,
    target: Target,
    database: SqlDatabase,
    settings: ReportSettings,
) -> tuple[LatencyReport | None, Baseline]:
    if not settings.baseline:
        return None, Baseline("skipped", reason="--no-baseline")
    # Without a model hash (a model over protobuf's 2 GB) the baseline is measured, not cached.
    key, pipeline_json = None, ""
    stored = None
    if model_sha256 is not None:
        key, pipeline_json = baseline_key(
            model_sha256, pipeline, target_key=database.target_fingerprint.key, settings=settings
        )
        try:
            stored = find_baseline(database.engine, key)
        except SQLAlchemyError as err:
            _log_skipped("reading the cached baseline", err)
    if stored is not None:
        return _latency_of(stored), Baseline(
            "cached", measured_on=stored.measured_on, measured_at=stored.measured_at.isoformat()
        )

    try:
        executable = build.compile_untuned(
            pipeline.mod, target=target, cuda_graph=settings.cuda_graph
        )
    except Exception as err:
        _log_skipped("the untuned baseline", err)
        return None, Baseline("not measured", reason=f"the untuned build failed: {_one_line(err)}")
    try:
        untuned = LoadedModel(executable, target=target)
        started = time.perf_counter()
        untuned.run(inputs)
        report = untuned.latency(
            inputs, box=settings.timer, first_call_sec=time.perf_counter() - started
        )
    except Exception as err:
        _log_skipped("the untuned baseline", err)
        return None, Baseline(
            "not measured", reason=f"the untuned build did not run: {_one_line(err)}"
        )

    measured_at = datetime.now(timezone.utc)
    stored = StoredBaseline(
        p50_ms=report.p50_ms,
        p90_ms=report.p90_ms,
        p99_ms=report.p99_ms,
        samples=report.samples,
        calls_per_sample=report.calls_per_sample,
        budget_reached=report.budget_reached,
        measured_on=platform.node(),
        measured_at=measured_at,
    )
    try:
        if key is not None:
            store_baseline(database.engine, key, stored, pipeline_json=pipeline_json)
    except SQLAlchemyError as err:  # the next compile measures it again
        _log_skipped("caching the baseline", err)
    return report, Baseline(
        "measured now", measured_on=platform.node(), measured_at=measured_at.isoformat()
    )


def _serialized(validated: ValidatedModel) -> bytes | None:
    """The model as bytes, its external data inlined; None past protobuf's 2 GB limit (ONNX
    Runtime then reads the file itself)."""
    try:
        return validated.onnx().SerializeToString()  # type: ignore[no-any-return]
    except Exception as err:  # ValueError: exceeds maximum protobuf size of 2GB
        _log_skipped("serializing the model", err)
        return None


def _latency_of(stored: StoredBaseline) -> LatencyReport:
    return LatencyReport(
        p50_ms=stored.p50_ms,
        p90_ms=stored.p90_ms,
        p99_ms=stored.p99_ms,
        samples=stored.samples,
        calls_per_sample=stored.calls_per_sample,
        budget_reached=stored.budget_reached,
    )


def _ratio(ours: float, theirs: float) -> float | None:
    return round(ours / theirs, 3) if theirs > 0 else None


def _one_line(err: BaseException, limit: int = 300) -> str:
    """The line of an error message that says what went wrong (TVM's come after a traceback)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _log_skipped(what: str, err: BaseException) -> None:
    logger.info("%s did not run: %s", what, _one_line(err), exc_info=err)


def _plain(value: Baseline | OutputCheck | PeerTiming | NotRun) -> dict[str, Any]:
    return dict(vars(value))


def _why_inconclusive(
    session: Any, validated: ValidatedModel, reference: list[np.ndarray]
) -> str | None:
    """Whether agreeing with ``reference`` proves anything (issue 19: a bare 0.00e+00 from a
    model whose outputs ignore their input is not a pass)."""
    scale = max((float(np.abs(out).max()) for out in reference if out.size), default=0.0)
    if all(out.size == 0 or float(np.ptp(out)) <= 1e-6 * max(scale, 1.0) for out in reference):
        return "ONNX Runtime's output is constant"
    other = random_inputs(validated.inputs, seed=7919)
    feed = {s.name: array for s, array in zip(validated.inputs, other, strict=True)}
    again = [np.asarray(value) for value in session.run(None, feed)]
    if max_abs_difference(again, reference) <= 1e-6 * max(scale, 1.0):
        return "ONNX Runtime's output does not change with the input"
    return None
