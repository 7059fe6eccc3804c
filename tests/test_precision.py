"""`--precision auto`: device kinds from real /proc/cpuinfo lines, this machine's calibration
file before the registry, and accuracy evidence before any speed-up is taken."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from models import MODELS, options
from models.spec import ModelSpec
from tracking.benchmarks.precision import calibrate, main
from tracking.machine import CACHE_ENV, cpu_flags
from tracking.precision import (
    calibration_path,
    choose_precision,
    cpu_kind,
    device_kind,
    gpu_kind,
    machine_identity,
    read_calibration,
    resolve_precision,
    speed_verdict,
    write_calibration,
)

# flags lines as Linux prints them (trimmed): a Sapphire Rapids Xeon, a Zen 4 EPYC, a Skylake
SAPPHIRE_RAPIDS = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                   "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_fp16 "
                   "amx_bf16 amx_tile amx_int8\n")
ZEN4 = ("processor\t: 0\nmodel name\t: AMD EPYC 9R14 96-Core Processor\n"
        "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512vnni\n")
SKYLAKE = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6148\n"
           "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl\n")
FAST = {"mixed_bfloat16": [1.6, 1.8, 1.7]}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A calibration cache of this test's own (not the session's)."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_device_kinds_from_cpuinfo_flags() -> None:
    assert cpu_kind(cpu_flags(SAPPHIRE_RAPIDS)) == "cpu_amx"
    assert cpu_kind(cpu_flags(ZEN4)) == "cpu_avx512_bf16"
    assert cpu_kind(cpu_flags(SKYLAKE)) == "cpu"
    assert cpu_kind(cpu_flags("processor\t: 0\n")) == "cpu"  # no flags line at all
    assert cpu_kind(cpu_flags("Features\t: fp asimd bf16\n")) == "cpu"  # Arm: no AVX-512
    assert gpu_kind((8, 0)) == gpu_kind((9, 0)) == "gpu_bf16"  # Ampere, Hopper
    assert gpu_kind((7, 5)) == gpu_kind(None) == "gpu"  # Turing, or capability unknown
    assert device_kind() in ("cpu_amx", "cpu_avx512_bf16", "cpu", "gpu_bf16", "gpu")


def test_speed_verdict_needs_every_repeat_and_a_real_gain() -> None:
    assert speed_verdict([1.6, 1.8, 1.7])
    assert not speed_verdict([1.6, 0.98, 1.7])  # one repeat slower
    assert not speed_verdict([1.02, 1.03, 1.01])  # faster, but within drift
    assert not speed_verdict([])


def test_auto_reads_this_machines_calibration_else_the_registry(cache: Path) -> None:
    registry = MODELS["vgg19"].faster_precision.get(device_kind(), "float32")
    assert read_calibration() is None
    choice = choose_precision("vgg19", "auto")
    assert choice.policy == registry
    assert "registry" in choice.reason or "nothing measured" in choice.reason

    path = write_calibration({"vgg19": {"speed_ratio": FAST}}, "speed")
    assert path == calibration_path() and path.parent == cache
    choice = choose_precision("vgg19", "auto")
    assert choice.policy == "mixed_bfloat16"  # faster here, accuracy held in the registry
    assert "calibrated on this machine" in choice.reason and "accuracy held" in choice.reason
    assert resolve_precision("vgg19", "auto") == "mixed_bfloat16"
    assert resolve_precision("vgg19", "float32") == "float32"  # asked for: never overridden

    write_calibration({"vgg19": {"speed_ratio": {"mixed_bfloat16": [0.99, 1.01, 1.0]}}},
                      "speed")
    choice = choose_precision("vgg19", "auto")  # measured here: no gain, whatever the registry
    assert choice.policy == "float32" and "no mixed policy faster in every repeat" in choice.reason


def test_a_calibration_from_another_machine_or_library_is_ignored(cache: Path) -> None:
    for field, other in (("cpu_model", "AMD EPYC 9R14 96-Core Processor"),
                         ("keras_version", "3.0.0")):
        identity = {**machine_identity(), field: other}
        record = {"format": 1, "machine": identity, "speed": {"vgg19": {"speed_ratio": FAST}},
                  "accuracy": {}}
        # under this machine's own file name, as if copied here
        calibration_path().parent.mkdir(parents=True, exist_ok=True)
        calibration_path().write_text(json.dumps(record))
        assert read_calibration() is None
        assert choose_precision("vgg19", "auto").policy == \
            MODELS["vgg19"].faster_precision.get(device_kind(), "float32")
    assert calibration_path({**machine_identity(), "cpu_count": "64"}) != calibration_path()


def test_faster_without_equal_accuracy_is_not_chosen(cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # ResNet-50's bfloat16 accuracy was measured lower (no accuracy_held); a concat_cnn whose
    # evidence is taken away stands for a model never measured
    monkeypatch.setitem(MODELS, "concat_cnn", replace(MODELS["concat_cnn"],
                                                      accuracy_held=options()))
    write_calibration({"concat_cnn": {"speed_ratio": FAST},
                       "resnet50": {"speed_ratio": FAST}}, "speed")
    for model in ("concat_cnn", "resnet50"):
        choice = choose_precision(model, "auto")
        assert choice.policy == "float32"
        assert "not measured equal" in choice.reason and "never measured" in choice.reason
    # this machine's own 3-seed measurement outranks the registry's evidence
    write_calibration({"vgg19": {"speed_ratio": FAST}}, "speed")
    write_calibration({"vgg19": {"mixed_bfloat16": {"held": False, "evidence": "digits, 3 "
                                                    "seeds: 0.90 against 0.97"}}}, "accuracy")
    choice = choose_precision("vgg19", "auto")
    assert choice.policy == "float32" and "measured here: digits, 3 seeds" in choice.reason


def test_the_registry_refuses_a_speedup_without_accuracy_evidence() -> None:
    spec = MODELS["resnet50"]  # no accuracy evidence for any mixed policy
    with pytest.raises(ValueError, match="speed alone never switches precision"):
        replace(spec, faster_precision=options(cpu_amx="mixed_bfloat16"))
    with pytest.raises(ValueError, match="unknown device kind 'cpu_bf16'"):
        replace(spec, accuracy_held=options(mixed_bfloat16="x"),
                faster_precision=options(cpu_bf16="mixed_bfloat16"))
    assert isinstance(replace(spec, accuracy_held=options(mixed_bfloat16="x"),
                              faster_precision=options(cpu_amx="mixed_bfloat16")), ModelSpec)


@pytest.mark.slow
def test_calibration_measures_writes_and_resumes(cache: Path, capsys) -> None:
    path = calibrate(["concat_cnn"], ["float32", "mixed_bfloat16"], repeats=2, image_size=16,
                     chunk_seconds=0.2)
    out = capsys.readouterr().out
    assert "about" in out.splitlines()[0] and str(path) in out.splitlines()[0]  # the plan first
    assert "[1/1] concat_cnn: images/s float32" in out
    entry = read_calibration()["speed"]["concat_cnn"]
    assert len(entry["images_per_second"]["float32"]) == 2
    assert len(entry["speed_ratio"]["mixed_bfloat16"]) == 2
    assert all(v > 0 for v in entry["images_per_second"]["mixed_bfloat16"])
    assert entry["faster"] == (["mixed_bfloat16"] if speed_verdict(
        entry["speed_ratio"]["mixed_bfloat16"]) else [])
    calibrate(["concat_cnn"], ["float32", "mixed_bfloat16"], repeats=2, image_size=16,
              chunk_seconds=0.2)  # done before: kept, not measured again
    assert "calibrated here before, kept" in capsys.readouterr().out
    assert read_calibration()["speed"]["concat_cnn"] == entry


@pytest.mark.parametrize("argv, message", [
    (["--calibrate", "--repeats", "0"], "--repeats must be a positive integer"),
    (["--calibrate", "--models", "vgg16"], "unknown models or precisions ['vgg16']"),
    (["--calibrate", "--precisions", "float32"], "a mixed policy missing"),
])
def test_calibration_bad_input_is_one_line(argv: list[str], message: str, cache: Path,
                                           capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not cache.exists()  # nothing measured, nothing written


def test_a_damaged_calibration_file_is_ignored_entry_by_entry(cache: Path, capsys) -> None:
    good = {"speed_ratio": FAST}
    record = {"format": 1, "machine": machine_identity(),
              "speed": {"vgg19": good, "concat_cnn": {"speed_ratio": {"mixed_bfloat16": "fast"}},
                        "resnet50": {"speed_ratio": None}},
              "accuracy": {"vgg19": {"mixed_bfloat16": {"held": "no"}}}}
    calibration_path().parent.mkdir(parents=True, exist_ok=True)
    calibration_path().write_text(json.dumps(record))
    assert choose_precision("concat_cnn", "auto").policy == \
        MODELS["concat_cnn"].faster_precision.get(device_kind(), "float32")  # no crash
    vgg = choose_precision("vgg19", "auto")  # its speed entry is sound; "held": "no" is not
    assert vgg.policy == "mixed_bfloat16" and "registry" in vgg.reason
    assert "3 malformed entries, ignored" in capsys.readouterr().err
    calibration_path().write_text(json.dumps({**record, "speed": []}))
    assert read_calibration()["speed"] == {}
