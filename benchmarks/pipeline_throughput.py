"""Pipeline: the full survey job (Zarr -> tiles -> cutouts -> models -> Parquet) against the
model bound, the hardware bound and the plain single-process DataLoader baseline.

All on the same survey and machine, one after the other:

1. the plain baseline (`plain_baseline.run_plain_baseline`, no Ray running);
2. galscale's survey job (`run_survey_job`) in a local Ray instance, after one warm-up job on
   one tile (a running cluster has its workers started; the warm-up time is reported apart);
3. the model stage alone in this process (`SurveyModels` on real cutouts) at all threads and at
   one thread, which shows what a one-CPU model actor can reach;
4. optionally the survey job again with OMP_NUM_THREADS set to the core count before Ray starts
   (Ray then leaves it alone instead of giving each one-CPU actor one thread): the cheap fix
   measured, not applied to the pipeline.

The two catalogs are compared (same rows, same probabilities), so the ratio compares equal work.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from common import (
    BenchSurvey,
    MemorySampler,
    ModelSet,
    SizePreset,
    figure,
    log,
    physical_cores,
    save_figure,
    stopwatch,
    time_calls,
)

from galscale.config import SurveyJobConfig, TilingConfig


def job_config(survey: BenchSurvey, out: Path, preset: SizePreset, models: ModelSet, *,
               batch_size: int, workers: int = 1, cpus_per_actor: float = 1.0,
               device: str = "auto", run_id: str = "bench", max_tiles: int = 0,
               model_threads: int = 0) -> SurveyJobConfig:
    return SurveyJobConfig(
        survey=survey.url, out=str(out), run_id=run_id,
        tiling=TilingConfig(preset.tile_size, preset.margin), **models.paths(), device=device,
        batch_size=batch_size, num_model_actors=workers, cpus_per_model_actor=cpus_per_actor,
        max_tiles=max_tiles, model_threads=model_threads)


def run_job(cfg: SurveyJobConfig) -> dict[str, Any]:
    """One survey job in the running (or a new local) Ray instance, with memory sampling."""
    from galscale.pipeline.job import run_survey_job

    shutil.rmtree(cfg.out, ignore_errors=True)
    with MemorySampler() as memory, stopwatch() as wall:
        summary = run_survey_job(cfg, progress=False)
    if not summary.ok:
        raise RuntimeError(f"survey job failed: {summary.tiles_failed} {summary.spectra}")
    return {
        "sources": summary.sources_in, "tiles": summary.tiles_done, "seconds": summary.seconds,
        "wall_s": wall["seconds"], "sources_per_s": summary.sources_per_second["end_to_end"],
        "stage_busy_s": summary.stage_seconds,
        "stage_sources_per_s": {k: v for k, v in summary.sources_per_second.items()
                                if k != "end_to_end"},
        "tiles_per_node": summary.tiles_per_node, "memory": memory.result(),
        "catalog": summary.catalog, "workers": cfg.num_model_actors,
        "cpus_per_model_actor": cfg.cpus_per_model_actor, "device": cfg.device,
    }


def ray_session(*, model_threads: int | None = None, **init: Any) -> Any:
    """Start a local Ray instance the way `run_survey_job` does (log_to_driver off). With
    `model_threads`, OMP_NUM_THREADS is set first, so Ray does not lower it per worker."""
    import ray

    if model_threads:
        os.environ["OMP_NUM_THREADS"] = str(model_threads)
    # address="local": always a fresh instance of our own; a bare ray.init() would join any
    # cluster recorded in /tmp/ray/ray_current_cluster (someone else's on a shared machine).
    init.setdefault("address", "local")
    ray.init(log_to_driver=False, include_dashboard=False, **init)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


def stop_ray(previous_omp: str | None) -> None:
    import ray

    ray.shutdown()
    if previous_omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = previous_omp


def warm_up(cfg: SurveyJobConfig, enabled: bool) -> float:
    """A one-tile job that starts the Ray workers and imports (a running cluster has them)."""
    if not enabled:
        return 0.0
    with stopwatch() as warm:
        run_job(replace(cfg, out=cfg.out + "_warmup", max_tiles=1))
    return warm["seconds"]


def warm_then_run(cfg: SurveyJobConfig, warmup: bool, **session: Any) -> dict[str, Any]:
    """Start Ray, run a one-tile warm-up job, then the measured job; stop Ray."""
    previous = os.environ.get("OMP_NUM_THREADS")
    ray_session(**session)
    try:
        warm_s = warm_up(cfg, warmup)
        result = run_job(cfg)
    finally:
        stop_ray(previous)
    result["warmup_job_s"] = warm_s
    return result


def model_stage_in_process(cfg: SurveyJobConfig, survey: BenchSurvey,
                           min_seconds: float) -> dict[str, Any]:
    """`SurveyModels` (the pipeline's model stage) on real cutouts in this process."""
    from galscale.pipeline.inference import SurveyModels
    from galscale.survey.extract import extract_tile
    from galscale.survey.store import open_survey
    from galscale.survey.tiling import tiles_for

    opened = open_survey(survey.url)
    parts = []
    for tile in tiles_for(opened.shape, cfg.tiling):
        parts.append(extract_tile(opened, tile, detection=cfg.detection))
        if sum(len(p["source_id"]) for p in parts) >= cfg.batch_size:
            break
    batch = {k: np.concatenate([p[k] for p in parts])[: cfg.batch_size] for k in parts[0]}
    n = len(batch["source_id"])
    if n == 0:
        return {"skipped": "no sources found in the survey"}
    models = SurveyModels(cfg)
    before = torch.get_num_threads()
    out = {"batch_size": n}
    for label, threads in (("all_threads", before), ("one_thread", 1)):
        torch.set_num_threads(threads)
        try:
            timing = time_calls(lambda: models(batch), min_seconds)
        finally:
            torch.set_num_threads(before)
        out[label] = {"threads": threads, "sources_per_s": n / timing["median_s"], **timing}
    return out


def compare_catalogs(galscale_catalog: str, baseline_parquet: str) -> dict[str, Any]:
    """Same sources and the same probabilities in both outputs (equal work, equal answers)."""
    a = pq.read_table(galscale_catalog).to_pandas().set_index("source_id").sort_index()
    b = pq.read_table(baseline_parquet).to_pandas().set_index("source_id").sort_index()
    same_ids = a.index.equals(b.index)
    diffs = {}
    if same_ids:
        for col in ("p_disk", "p_low_z", "p_high_z", "p_brown_dwarf"):
            d = np.abs(a[col].to_numpy(float) - b[col].to_numpy(float))
            diffs[col] = float(np.nanmax(d)) if np.isfinite(d).any() else 0.0
    return {"galscale_rows": len(a), "baseline_rows": len(b), "same_source_ids": same_ids,
            "max_abs_probability_difference": diffs}


def run(preset: SizePreset, models: ModelSet, survey: BenchSurvey, work: Path,
        model_bound: dict[str, Any], hardware: dict[str, Any], batch_size: int) -> dict[str, Any]:
    from plain_baseline import run_plain_baseline

    cfg = job_config(survey, work / "pipeline_run", preset, models, batch_size=batch_size)
    log("pipeline: plain DataLoader baseline")
    baseline_out = work / "baseline.parquet"
    with MemorySampler() as base_mem:
        base = run_plain_baseline(survey.url, str(baseline_out), **models.paths(),
                                  tiling=cfg.tiling, detection=cfg.detection,
                                  batch_size=batch_size)
    baseline = {"sources": base.rows, "seconds": base.seconds, "sources_per_s": base.sources_per_s,
                "stage_s": base.stage_seconds, "memory": base_mem.result(),
                "threads": torch.get_num_threads()}
    log("pipeline: galscale survey job")
    galscale = warm_then_run(cfg, preset.warmup)
    log("pipeline: model stage in process")
    stage = model_stage_in_process(cfg, survey, preset.min_seconds)
    variants = {}
    if preset.threads_fix_variant:
        log("pipeline: survey job with one model thread (Ray's default for a 1-CPU actor)")
        one_cfg = replace(cfg, out=str(work / "pipeline_run_one_thread"), model_threads=1)
        variants["one_model_thread"] = warm_then_run(one_cfg, preset.warmup)

    chain = model_bound["chain"]
    chain_flops = hardware["flops_per_item"]["per_source_chain"]
    rate = galscale["sources_per_s"]
    ratios = {
        "pipeline_vs_model_bound": rate / chain["best_items_per_s"],
        "pipeline_vs_model_bound_pipeline_settings":
            rate / chain["pipeline_settings_all_threads"]["items_per_s"],
        "galscale_vs_baseline": rate / baseline["sources_per_s"],
        "pipeline_flops_per_s": rate * chain_flops,
        "pipeline_fraction_of_hardware_peak": rate * chain_flops / hardware["peak_flops_per_s"],
        "model_bound_fraction_of_hardware_peak":
            chain["best_items_per_s"] * chain_flops / hardware["peak_flops_per_s"],
    }
    for name, v in variants.items():
        ratios[f"{name}_vs_model_bound"] = v["sources_per_s"] / chain["best_items_per_s"]
        ratios[f"{name}_vs_baseline"] = v["sources_per_s"] / baseline["sources_per_s"]
    return {
        "survey": survey, "batch_size": batch_size, "tiling": cfg.tiling, "cores": physical_cores(),
        "galscale": galscale, "baseline": baseline, "model_stage_in_process": stage,
        "variants": variants, "model_bound_chain_items_per_s": chain["best_items_per_s"],
        "hardware_bound_chain_items_per_s": hardware["best_possible_items_per_s"]["per_source_chain"],
        "ratios": ratios,
        "catalog_check": compare_catalogs(galscale["catalog"], str(baseline_out)),
    }


def plot(result: dict[str, Any], path: Any) -> None:
    fig, (ax1, ax2) = figure(2, width=5.5)
    bars = {
        "hardware bound": result["hardware_bound_chain_items_per_s"],
        "model bound": result["model_bound_chain_items_per_s"],
        "galscale pipeline": result["galscale"]["sources_per_s"],
        "plain baseline": result["baseline"]["sources_per_s"],
    }
    for name, v in result["variants"].items():
        bars[f"pipeline, {name}"] = v["sources_per_s"]
    ax1.barh(list(bars), list(bars.values()), color="tab:blue")
    ax1.set_xscale("log")
    ax1.set_xlabel("sources/s (per-source chain)")
    ax1.set_title(f"{result['survey']['tiles']} tiles, {result['galscale']['sources']} sources")
    stages = ("tiles_and_cutouts", "models")
    g = [result["galscale"]["stage_busy_s"].get(s, 0.0) for s in stages]
    b = [result["baseline"]["stage_s"].get(s, 0.0) for s in stages]
    x = np.arange(len(stages))
    ax2.bar(x - 0.2, g, 0.4, label=f"galscale (wall {result['galscale']['seconds']:.1f} s)")
    ax2.bar(x + 0.2, b, 0.4, label=f"baseline (wall {result['baseline']['seconds']:.1f} s)")
    ax2.set_xticks(x, stages)
    ax2.set_ylabel("busy seconds per stage")
    ax2.legend(fontsize=8)
    save_figure(fig, path)
