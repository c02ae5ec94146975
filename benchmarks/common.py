"""Shared pieces of the throughput benchmarks: size presets, the machine description, timing,
process-tree memory sampling, the benchmark surveys and the model artefacts.

Not a library module: `run_all.py` puts this folder on `sys.path` and every benchmark imports
it. Nothing here knows about a particular benchmark.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODEL_ROLES = ("denoiser", "morphology", "redshift")

# Sources per pixel of the simulated surveys: SimConfig's default field (3000 sources in
# 4096 x 4096 px), so surveys of every size have the same source density.
SOURCE_DENSITY = 3000 / 4096**2


@dataclass(frozen=True)
class SizePreset:
    """How big each benchmark runs. `tiny` only checks that everything works (CI)."""

    name: str
    matmul_n: int  # side of the square matrices of the hardware benchmark
    min_seconds: float  # shortest timing window of one measurement
    batch_sizes: tuple[int, ...]  # model-bound batch-size sweep
    try_compile: bool  # torch.compile variants (tens of seconds of compilation each)
    tile_size: int
    margin: int
    pipeline_tiles_per_side: int  # pipeline / baseline / worker-scaling survey: n x n tiles
    realistic_survey: bool  # GalSim simulator (True) or Gaussian sources (False, cheap)
    workers: tuple[int, ...]
    size_series: tuple[int, ...]  # tiles per survey for time / memory vs survey size
    cluster_nodes: int
    spectral_sizes: tuple[int, ...]
    spectral_compare: int  # 0: skip sample-fit vs full-fit
    pipeline_batch_size: int = 64  # SurveyJobConfig.batch_size of the survey-job runs
    warmup: bool = True  # one-tile warm-up job before the measured jobs of each Ray session
    series_tile_size: int = 0  # tile size of the survey-size series (0: tile_size)
    compile_models: tuple[str, ...] = ("denoiser", "d16_classifier", "multiband_classifier",
                                       "spectral_encoder")  # those torch.compile is tried on
    spectra_per_s_items: int = 4096  # spectra per spectral-encoder batch at most
    threads_fix_variant: bool = True  # also run the pipeline with one model thread

    @property
    def inner(self) -> int:
        return self.tile_size - 2 * self.margin


PRESETS: dict[str, SizePreset] = {
    "tiny": SizePreset(
        name="tiny", matmul_n=256, min_seconds=0.05, batch_sizes=(2, 4), try_compile=False,
        tile_size=320, margin=128, pipeline_tiles_per_side=2, realistic_survey=False,
        workers=(1, 2), size_series=(1, 4), cluster_nodes=2, spectral_sizes=(300,),
        spectral_compare=0, threads_fix_variant=False, pipeline_batch_size=4, warmup=False),
    "small": SizePreset(
        name="small", matmul_n=1024, min_seconds=0.3, batch_sizes=(4, 16),
        try_compile=True, tile_size=384, margin=128, pipeline_tiles_per_side=2,
        realistic_survey=True, workers=(1, 2, 4), size_series=(1, 4, 16), cluster_nodes=2,
        spectral_sizes=(1000,), spectral_compare=0, pipeline_batch_size=16,
        compile_models=("d16_classifier", "multiband_classifier", "spectral_encoder"),
        series_tile_size=320),
    "medium": SizePreset(
        name="medium", matmul_n=2048, min_seconds=1.0, batch_sizes=(16, 32, 64),
        try_compile=False, tile_size=1024, margin=128, pipeline_tiles_per_side=2,
        realistic_survey=True, workers=(1, 2), size_series=(1, 4, 16), cluster_nodes=2,
        spectral_sizes=(1000, 10_000), spectral_compare=0, pipeline_batch_size=64,
        series_tile_size=512),
    "full": SizePreset(
        name="full", matmul_n=2048, min_seconds=2.0, batch_sizes=(8, 16, 32, 64, 128),
        try_compile=True, tile_size=1024, margin=128, pipeline_tiles_per_side=3,
        realistic_survey=True, workers=(1, 2, 4), size_series=(1, 4, 16), cluster_nodes=2,
        spectral_sizes=(1000, 10_000, 100_000), spectral_compare=10_000),
}


# ---------------------------------------------------------------------------------------------
# machine
# ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    """CPU cores this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_description(command: list[str]) -> dict[str, Any]:
    """What a reader needs to compare results across machines."""
    import psutil
    import ray
    import torch

    cuda = torch.cuda.is_available()
    commit = ""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(command),
        "cpu_model": cpu_model(),
        "cores": physical_cores(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "ray": ray.__version__,
        "numpy": np.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "git_commit": commit,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


# ---------------------------------------------------------------------------------------------
# timing and memory
# ---------------------------------------------------------------------------------------------


def synchronize() -> None:
    """Wait for queued CUDA work, so wall-clock timings are honest on a GPU."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], Any], min_seconds: float, *, warmup: int = 1,
               min_calls: int = 3, max_calls: int = 1000) -> dict[str, float]:
    """Call `fn` repeatedly for at least `min_seconds` (and `min_calls` calls) after `warmup`
    calls; returns median / best seconds per call and the number of timed calls."""
    for _ in range(warmup):
        fn()
    synchronize()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_calls and (len(times) < min_calls
                                      or time.perf_counter() - started < min_seconds):
        t = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - t)
    return {"median_s": float(np.median(times)), "best_s": float(np.min(times)),
            "calls": len(times)}


def process_tree_memory(root_pid: int | None = None) -> dict[str, int]:
    """Proportional set size (PSS: shared pages split between their users, so Ray's shared
    object store is not counted once per worker) of `root_pid` and of all its descendants, in
    bytes. Falls back to RSS where PSS is not available."""
    import psutil

    root = psutil.Process(root_pid or os.getpid())

    def size(proc: psutil.Process) -> int:
        try:
            info = proc.memory_full_info()
            return int(getattr(info, "pss", 0) or info.rss)
        except (psutil.Error, OSError):
            return 0

    driver = size(root)
    try:
        children = root.children(recursive=True)
    except psutil.Error:
        children = []
    return {"driver": driver, "total": driver + sum(size(p) for p in children),
            "processes": 1 + len(children)}


class MemorySampler:
    """Samples `process_tree_memory` on a background thread; keeps the peaks."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.peak_driver = self.peak_total = self.peak_processes = self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        m = process_tree_memory()
        self.peak_driver = max(self.peak_driver, m["driver"])
        self.peak_total = max(self.peak_total, m["total"])
        self.peak_processes = max(self.peak_processes, m["processes"])
        self.samples += 1

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def result(self) -> dict[str, float]:
        return {"peak_driver_mib": round(self.peak_driver / 2**20, 1),
                "peak_total_mib": round(self.peak_total / 2**20, 1),
                "peak_processes": self.peak_processes, "samples": self.samples}


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """`with stopwatch() as t: ...` then `t["seconds"]`."""
    record = {"seconds": 0.0}
    started = time.perf_counter()
    try:
        yield record
    finally:
        record["seconds"] = time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# inputs: model artefacts and surveys
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSet:
    """Artefact folders (or shipped names) of the three per-source models."""

    denoiser: str
    morphology: str
    redshift: str
    weights: str  # "shipped" or "random (timing only)"

    def paths(self) -> dict[str, str]:
        return {role: getattr(self, role) for role in MODEL_ROLES}


def model_set(work: Path) -> ModelSet:
    """The shipped artefacts when all three exist, else random-weight artefacts of the same
    architectures written under `work` (throughput does not depend on the weight values)."""
    from galscale.registry import save_artifact, shipped_names

    if set(MODEL_ROLES) <= set(shipped_names()):
        return ModelSet(*MODEL_ROLES, weights="shipped")
    import torch

    from galscale.models.denoiser import build_denoiser
    from galscale.models.morphology import build_d16_classifier
    from galscale.models.redshift import build_redshift_classifier

    torch.manual_seed(0)
    folder = work / "models"
    save_artifact(build_denoiser(), folder / "denoiser", name="denoiser",
                  builder="galscale.models.denoiser:build_denoiser", architecture={},
                  training={"note": "random weights, benchmark only"})
    save_artifact(build_d16_classifier().eval().export(), folder / "morphology",
                  name="morphology", builder="galscale.models.morphology:build_disk_classifier",
                  architecture={}, training={"note": "random weights, benchmark only"})
    save_artifact(build_redshift_classifier(), folder / "redshift", name="redshift",
                  builder="galscale.models.redshift:build_redshift_classifier",
                  architecture={}, training={"note": "random weights, benchmark only"})
    return ModelSet(*(str(folder / r) for r in MODEL_ROLES), weights="random (timing only)")


def spectral_encoder() -> tuple[Any, str]:
    """The shipped spectral VAE when present, else an untrained one on the default rest grid."""
    import torch

    from galscale.models.spectral_vae import build_spectral_vae
    from galscale.registry import ArtifactError, load_model
    from galscale.spectra.preprocess import DEFAULT_GRID_SIZE

    try:
        return load_model("spectral"), "shipped"
    except ArtifactError:
        torch.manual_seed(0)
        return build_spectral_vae(DEFAULT_GRID_SIZE).eval(), "random (timing only)"


@dataclass(frozen=True)
class BenchSurvey:
    """A survey written for the benchmarks."""

    url: str
    side: int  # pixels
    tiles: int
    n_sources: int  # sources placed by the simulator (detections may differ)
    kind: str  # "galsim simulator" or "gaussian sources"
    seconds_to_make: float


def make_survey(work: Path, tiles_per_side: int, preset: SizePreset, *, realistic: bool,
                seed: int = 0) -> BenchSurvey:
    """A square survey of `tiles_per_side`^2 tiles of the preset's tiling, at the simulator's
    default source density; written once under `work` and reused."""
    side = tiles_per_side * preset.inner
    n_sources = max(1, round(SOURCE_DENSITY * side * side))
    kind = "galsim simulator" if realistic else "gaussian sources"
    folder = work / f"survey_{'sim' if realistic else 'gauss'}_{side}_{seed}"
    url = folder / "survey.zarr"
    started = time.perf_counter()
    if not (url / "zarr.json").exists():
        if realistic:
            from galscale.config import SimConfig
            from galscale.sim.survey import simulate_survey, write_simulated_survey

            sim = simulate_survey(SimConfig(size=side, n_sources=n_sources, seed=seed,
                                            chunk=min(1024, side)))
            write_simulated_survey(sim, str(folder))
        else:
            from galscale.survey.synthetic import make_gaussian_survey

            make_gaussian_survey(str(url), shape=(side, side), n_sources=n_sources, seed=seed,
                                 chunk=min(1024, side), name="benchmark-gaussian")
    return BenchSurvey(url=str(url), side=side, tiles=tiles_per_side**2, n_sources=n_sources,
                       kind=kind, seconds_to_make=round(time.perf_counter() - started, 2))


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, NumPy scalars and paths -> plain JSON values."""
    if hasattr(obj, "__dataclass_fields__"):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        return round(obj, 6)
    return obj


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(payload), indent=2) + "\n")
    return path


def figure(n_panels: int = 1, width: float = 5.0, height: float = 4.0):
    """A matplotlib figure with `n_panels` side by side (non-interactive backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False)
    return fig, list(axes[0])


def save_figure(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
