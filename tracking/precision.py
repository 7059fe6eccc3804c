"""Numeric precision of training: float32, or Keras's mixed policies, chosen per model and
kind of device where one was measured faster without losing accuracy.

    with precision_policy(resolve_precision(config.model, "auto")):
        model = build_classifier(config, data)     # layers take the policy when built
    choose_precision("vgg19", "auto")              # PrecisionChoice(policy, kind, reason)

The device kinds (`models.spec.DEVICE_KINDS`) are those whose speed under a mixed policy was
seen to differ: `gpu_bf16` (an NVIDIA GPU of compute capability 8.0 or more, Ampere on, with
native bfloat16), `gpu` (another GPU), `cpu_amx` (Intel AMX tiles, /proc/cpuinfo flag
`amx_bf16`), `cpu_avx512_bf16` (AVX-512 BF16 vector instructions without AMX, e.g. AMD Zen 4)
and `cpu`. The same model trained 1.7-2.1x faster in mixed_bfloat16 on an AVX-512 BF16 EPYC
and no faster on an AMX Xeon (docs/benchmarks.md), so one `cpu_bf16` kind cannot be right for
both.

`auto` decides, in this order:
1. this machine's own calibration (`python -m tracking.benchmarks.precision --calibrate`): a
   JSON file in the suite's cache folder named by a key of the CPU model, core count, device
   kind, accelerator and the Keras/backend versions; a file whose recorded machine differs
   from this one is ignored. A mixed policy it measured faster (`speed_verdict`) is taken;
   none faster means float32;
2. without a calibration, the registry's facts (`ModelSpec.faster_precision`, keyed by kind);
3. else float32.
Speed alone never switches precision: a policy also needs accuracy evidence for that model,
the calibration file's own 3-seed measurement where the benchmark made one, else the
registry's `ModelSpec.accuracy_held`. The classifier's output layer stays float32 under every
policy (models._common.dense_head), so probabilities and the loss keep full precision; with
mixed_float16 Keras scales the loss itself.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import statistics
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from models import MODELS
from models.spec import MIXED_PRECISIONS
from tracking.machine import (
    cache_dir,
    cpu_flags,
    gpu_compute_capability,
    library_versions,
    processor_model,
)

PRECISIONS = ("auto", "float32", *MIXED_PRECISIONS)
AMX_FLAG = "amx_bf16"  # Intel AMX with bfloat16 tiles (Sapphire Rapids and later)
AVX512_BF16_FLAG = "avx512_bf16"  # AVX-512 BF16 vector instructions (Cooper Lake, Zen 4)
BF16_GPU_CAPABILITY = (8, 0)  # CUDA compute capability from which bfloat16 is native (Ampere)
# a mixed policy counts as faster when it was faster in every interleaved repeat and by at
# least this much in their median: on a shared 2-core machine a median moves by +/-10 %, and a
# gain under 5 % is not worth trading float32's numerics for
MIN_SPEEDUP = 1.05
CALIBRATION_FORMAT = 1


def cpu_kind(flags: Iterable[str]) -> str:
    """`cpu_amx`, `cpu_avx512_bf16` or `cpu` from a CPU's feature flags (/proc/cpuinfo)."""
    flags = set(flags)
    if AMX_FLAG in flags:
        return "cpu_amx"
    return "cpu_avx512_bf16" if AVX512_BF16_FLAG in flags else "cpu"


def gpu_kind(capability: tuple[int, int] | None) -> str:
    """`gpu_bf16` for CUDA compute capability 8.0 or more, else `gpu` (unknown included)."""
    return "gpu_bf16" if capability is not None and capability >= BF16_GPU_CAPABILITY else "gpu"


def device_kind() -> str:
    """This machine's kind (DEVICE_KINDS): a GPU's when Keras's backend sees one (its compute
    capability through NVML), else the CPU's from its flags."""
    try:
        devices = keras.distribution.list_devices()
    except (NotImplementedError, RuntimeError, ValueError):  # a backend without the listing
        devices = []
    if any(d.lower().startswith(("gpu", "cuda")) for d in devices):
        return gpu_kind(gpu_compute_capability())
    return cpu_kind(cpu_flags())


def machine_identity() -> dict[str, str]:
    """What a calibration holds for: CPU model, usable cores, device kind, accelerator and
    the Keras and backend versions (a change of any makes a new calibration). Read once per
    process (`--precision auto` asks at every Config.resolved): a copy is returned."""
    return dict(_machine_identity())


@functools.lru_cache(maxsize=1)
def _machine_identity() -> dict[str, str]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = library_versions()
    backend = versions["keras_backend"]
    identity = {"cpu_model": processor_model(), "cpu_count": str(cores),
                "device_kind": device_kind(), "keras_backend": backend,
                "keras_version": versions.get("keras_version", ""),
                f"{backend}_version": versions.get(f"{backend}_version", "")}
    capability = gpu_compute_capability()
    if capability is not None:
        identity["gpu_compute_capability"] = f"{capability[0]}.{capability[1]}"
    return identity


def calibration_path(identity: Mapping[str, str] | None = None) -> Path:
    """`precision-<key>.json` in the cache folder, key: SHA-256 of `identity` (this machine's
    by default), 16 hex digits."""
    identity = machine_identity() if identity is None else identity
    key = hashlib.sha256(json.dumps(dict(identity), sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"precision-{key}.json"


def read_calibration(path: Path | None = None) -> dict[str, Any] | None:
    """This machine's calibration, or None where there is none, it cannot be read, or it was
    made on another machine or library version (its `machine` differs from this one's)."""
    identity = machine_identity()
    path = calibration_path(identity) if path is None else path
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(record, dict) or record.get("format") != CALIBRATION_FORMAT
            or record.get("machine") != identity):
        return None
    return _well_formed(record, path)


_WARNED: set[str] = set()  # calibration files already said to hold malformed entries


def _well_formed(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """`record` without the entries `auto` cannot read (a hand-edited or damaged file): a
    speed entry needs `speed_ratio` {policy: [positive finite numbers]}, an accuracy entry
    {policy: {"held": true|false}}; what is dropped is said once on stderr."""
    def ratios_ok(entry: Any) -> bool:
        ratios = entry.get("speed_ratio") if isinstance(entry, dict) else None
        return isinstance(ratios, dict) and all(
            isinstance(v, list) and v and all(
                isinstance(x, int | float) and not isinstance(x, bool) and 0 < x < 1e6
                for x in v) for v in ratios.values())

    def held_ok(entry: Any) -> bool:
        return isinstance(entry, dict) and all(
            isinstance(v, dict) and isinstance(v.get("held"), bool) for v in entry.values())

    speed = record.get("speed") if isinstance(record.get("speed"), dict) else {}
    accuracy = record.get("accuracy") if isinstance(record.get("accuracy"), dict) else {}
    clean = {**record, "speed": {m: e for m, e in speed.items() if ratios_ok(e)},
             "accuracy": {m: e for m, e in accuracy.items() if held_ok(e)}}
    dropped = (len(speed) - len(clean["speed"]) + len(accuracy) - len(clean["accuracy"])
               + (not isinstance(record.get("speed"), dict))
               + (not isinstance(record.get("accuracy"), dict)))
    if dropped and str(path) not in _WARNED:
        _WARNED.add(str(path))
        print(f"warning: {path} holds {dropped} malformed entries, ignored (run the "
              "calibration again to replace them)", file=sys.stderr)
    return clean


def write_calibration(update: Mapping[str, Any], section: str) -> Path:
    """Merge `update` (model -> entry) into `section` ("speed" or "accuracy") of this
    machine's calibration file and write it whole (a temporary file renamed over it, so a
    stopped calibration leaves the models it finished); returns its path."""
    identity = machine_identity()
    path = calibration_path(identity)
    record = read_calibration(path) or {"format": CALIBRATION_FORMAT, "machine": identity,
                                        "speed": {}, "accuracy": {}}
    record.setdefault(section, {}).update(update)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record, indent=1, sort_keys=True))
    temporary.replace(path)
    return path


def speed_verdict(ratios: Sequence[float]) -> bool:
    """Whether a mixed policy is faster: each interleaved repeat's speed ratio against
    float32 above 1, and their median at least MIN_SPEEDUP."""
    return bool(ratios) and min(ratios) > 1 and statistics.median(ratios) >= MIN_SPEEDUP


@dataclass(frozen=True)
class PrecisionChoice:
    """A resolved precision: the Keras dtype policy, the device kind, and why (one line)."""

    policy: str
    kind: str
    reason: str


def _accuracy_evidence(model: str, policy: str,
                       calibration: Mapping[str, Any] | None) -> tuple[bool, str]:
    """(held, where from): this machine's own 3-seed measurement, else the registry's."""
    own = ((calibration or {}).get("accuracy", {}).get(model, {}).get(policy))
    if isinstance(own, dict) and "held" in own:
        return bool(own["held"]), f"measured here: {own.get('evidence', '3 seeds')}"
    evidence = MODELS[model].accuracy_held.get(policy)
    return evidence is not None, f"registry: {evidence}" if evidence else "never measured"


def choose_precision(model: str, precision: str,
                     calibration: Mapping[str, Any] | None | bool = True) -> PrecisionChoice:
    """The policy a run of `model` uses for `precision`, with the reason (see the module
    docstring for `auto`'s order). `calibration`: True reads this machine's file, None or a
    record use that."""
    kind = device_kind()
    if precision != "auto":
        return PrecisionChoice(precision, kind, "requested")
    if calibration is True:
        calibration = read_calibration()
    measured = (calibration or {}).get("speed", {}).get(model)
    if isinstance(measured, dict):
        where = (f"calibrated on this machine ({calibration_path().name}, "
                 f"{measured.get('image_size', '?')} px, {measured.get('repeats', '?')} repeats)")
        for policy, ratios in measured.get("speed_ratio", {}).items():
            if policy not in MIXED_PRECISIONS or not speed_verdict(ratios):
                continue
            held, evidence = _accuracy_evidence(model, policy, calibration)
            gain = f"{statistics.median(ratios):.2f}x float32's speed"
            if held:
                return PrecisionChoice(policy, kind, f"auto: {where}: {policy} at {gain}; "
                                                     f"accuracy held ({evidence})")
            return PrecisionChoice("float32", kind, (
                f"auto: {where}: {policy} at {gain}, but its accuracy for {model} was not "
                f"measured equal to float32's ({evidence}): float32"))
        gains = ", ".join(f"{p} {statistics.median(r):.2f}x"
                          for p, r in measured.get("speed_ratio", {}).items() if r)
        return PrecisionChoice("float32", kind, f"auto: {where}: no mixed policy faster in "
                                                f"every repeat and by {MIN_SPEEDUP - 1:.0%} in "
                                                f"the median ({gains or 'none measured'}): "
                                                "float32")
    policy = MODELS[model].faster_precision.get(kind)
    if policy is not None:
        held, evidence = _accuracy_evidence(model, policy, calibration)
        if held:
            return PrecisionChoice(policy, kind, (
                f"auto: the registry's measurement on {kind} (no calibration of this machine): "
                f"{policy}; accuracy held ({evidence})"))
        return PrecisionChoice("float32", kind, (
            f"auto: the registry has {policy} faster on {kind}, but its accuracy for {model} "
            f"was measured lower here ({evidence}): float32"))
    return PrecisionChoice("float32", kind,
                           f"auto: nothing measured faster for {model} on {kind}: float32")


def resolve_precision(model: str, precision: str) -> str:
    """`precision` itself, or for `auto` the policy `choose_precision` picks."""
    return precision if precision != "auto" else choose_precision(model, precision).policy


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[str]:
    """Keras's global dtype policy `precision` while the block builds models, then the one
    before (layers keep the policy they were built with)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield precision
    finally:
        keras.config.set_dtype_policy(previous)
