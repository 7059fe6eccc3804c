"""The machine and libraries this process runs on: what a run logs about them, what a logged
model requires, and what a report says its latencies were measured on.

    machine()            # python_version, cpu_model, cpu_count, keras_devices (+ accelerator_*)
    library_versions()   # keras_backend and <library>_version of each installed library
    model_requirements() # the logged model's pinned pip requirements
    cpu_flags()          # the CPU's feature flags (/proc/cpuinfo), e.g. {"avx512_bf16", ...}
    gpu_compute_capability()  # (major, minor) of the least capable visible GPU, or None
    cache_dir()          # where the suite keeps per-machine files (decoded images, calibration)

GPUs are read through NVML (nvidia-ml-py, optional: `pip install -e ".[gpu]"`), limited to
those CUDA_VISIBLE_DEVICES lets this process use; without it or without a GPU there are none.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from pathlib import Path

import keras

try:
    import pynvml  # nvidia-ml-py: optional, only useful where an NVIDIA GPU exists
except ImportError:
    pynvml = None

LIBRARIES = ("keras", "mlflow", "tensorflow", "jax", "torch", "numpy", "scikit-learn")
BACKEND_LIBRARY = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
CACHE_ENV = "KERAS_MLFLOW_SUITE_CACHE"
CPU_INFO = Path("/proc/cpuinfo")


def cache_dir() -> Path:
    """The cache folder: $KERAS_MLFLOW_SUITE_CACHE, else $XDG_CACHE_HOME/keras-mlflow-suite,
    else ~/.cache/keras-mlflow-suite."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "keras-mlflow-suite"


def library_versions() -> dict[str, str]:
    """`keras_backend` and `<library>_version` for each installed library of LIBRARIES."""
    versions = {"keras_backend": keras.backend.backend()}
    for lib in LIBRARIES:
        try:
            versions[f"{lib.replace('-', '_')}_version"] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def model_requirements() -> list[str]:
    """Pinned requirements of the logged model (mlflow, keras, the backend, numpy): MLflow then
    needs no slow inference subprocess to guess them."""
    libs = ["mlflow", "keras", BACKEND_LIBRARY.get(keras.backend.backend(), "tensorflow"),
            "numpy"]
    reqs = []
    for lib in libs:
        try:
            reqs.append(f"{lib}=={importlib.metadata.version(lib)}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(lib)
    return reqs


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The feature flags of the first CPU in `cpuinfo` (the text of Linux's /proc/cpuinfo,
    read when None: its `flags` line on x86, `Features` on Arm); empty where there is none."""
    if cpuinfo is None:
        try:
            cpuinfo = CPU_INFO.read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def processor_model() -> str:
    """The CPU's model name."""
    # /proc/cpuinfo names the model on Linux, where platform.processor() gives only "x86_64"
    try:
        for line in CPU_INFO.read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def visible_gpu(index: int, uuid: str) -> bool:
    """Whether CUDA_VISIBLE_DEVICES (indices or GPU-UUIDs; unset = all) lets the run use the
    GPU that NVML numbers `index`."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return True
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    return str(index) in entries or any(uuid.startswith(e) for e in entries
                                        if e.startswith("GPU-"))


def accelerators() -> dict[str, str]:
    """`accelerator` (model, "N x model" for several), `accelerator_driver` and
    `accelerator_memory_mb` (each GPU's) of the NVIDIA GPUs this process may use, through
    NVML (nvidia-ml-py); {} without it or without a GPU."""
    if pynvml is None:
        return {}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return {}
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            if visible_gpu(i, _text(pynvml.nvmlDeviceGetUUID(handle))):
                gpus.append((_text(pynvml.nvmlDeviceGetName(handle)),
                             pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20))
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
    except pynvml.NVMLError:
        return {}
    finally:
        pynvml.nvmlShutdown()
    if not gpus:
        return {}
    models = sorted({name for name, _ in gpus})
    return {"accelerator": ", ".join(models) if len(gpus) == 1 or len(models) > 1
            else f"{len(gpus)} x {models[0]}",
            "accelerator_driver": driver,
            "accelerator_memory_mb": ",".join(str(mb) for _, mb in gpus)}


def gpu_compute_capability() -> tuple[int, int] | None:
    """CUDA compute capability (major, minor) of the least capable NVIDIA GPU this process may
    use, through NVML (nvidia-ml-py, whatever the Keras backend); None without NVML or a GPU."""
    if pynvml is None:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            if visible_gpu(i, _text(pynvml.nvmlDeviceGetUUID(handle))):
                found.append(tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle)))
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()
    return min(found) if found else None


def _text(value: str | bytes) -> str:
    """NVML strings: bytes in older nvidia-ml-py releases, str in newer ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


def keras_devices() -> str:
    """The devices the Keras backend sees (`keras.distribution.list_devices`), comma-joined."""
    try:
        return ",".join(keras.distribution.list_devices())
    except (NotImplementedError, RuntimeError, ValueError):  # a backend without the listing
        return ""


def machine() -> dict[str, str]:
    """Params of the machine: Python, processor, usable cores, Keras's devices, the GPUs, and
    CUDA_VISIBLE_DEVICES as this process got it (one worker per GPU: `docs/tuning.md`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"python_version": platform.python_version(), "cpu_model": processor_model(),
            "cpu_count": str(cores), "keras_devices": keras_devices(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"),
            **accelerators()}


def installed_packages() -> str:
    """Every installed distribution, `name==version` a line as `pip freeze` lists them, sorted;
    an editable or direct-URL install says where from."""
    # importlib.metadata rather than a `pip freeze` subprocess: pip need not be installed,
    # and no second interpreter starts
    lines = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        line = f"{name}=={dist.version}"
        url = dist.read_text("direct_url.json")
        if url:
            line += f"  # from {json.loads(url).get('url', '?')}"
        lines.add(line)
    return "\n".join(sorted(lines, key=str.lower)) + "\n"
