"""Scaling: model workers, nodes and survey size.

- Workers: the survey job with 1, 2, 4 model actors on one machine. Each actor asks for
  min(1, (cores - 1) / workers) CPUs, so the tile stage always keeps one CPU and every
  configuration fits the machine (4 workers on 2 cores share it); one torch thread per actor,
  so the figure measures adding workers, not threads. On a GPU machine an actor
  uses the GPU while workers <= GPUs, else runs on CPU (recorded per run).
  Efficiency(w) = throughput(w) / (w x throughput(1)).
- Nodes: the same job on a multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`,
  the cores split between the nodes, nodes - 1 whole-CPU model actors, so tiles and models run
  on different nodes and cutouts cross nodes), against one node with the same workers.
- Survey size: tiles x1, x4, x16 at the same source density (Gaussian-source surveys, cheap to
  make): time should grow with the number of sources and peak memory (PSS of the driver and of
  every Ray process) should stay flat, since Ray Data streams tiles with back-pressure.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from common import (
    BenchSurvey,
    ModelSet,
    SizePreset,
    figure,
    log,
    make_survey,
    physical_cores,
    save_figure,
    stopwatch,
)
from pipeline_throughput import job_config, ray_session, run_job, stop_ray, warm_up


def actor_cpus(workers: int, cores: int) -> float:
    """CPUs per model actor that leave one CPU to the tile stage (at most one each)."""
    return min(1.0, max(cores - 1, 1) / workers)


def actor_device(workers: int) -> str:
    """The GPU while there is one per actor, else CPU (an actor holds a whole GPU)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return "auto" if workers <= gpus else "cpu"


def _worker_runs(survey: BenchSurvey, work: Path, preset: SizePreset, models: ModelSet,
                 batch_size: int, cores: int) -> dict[str, Any]:
    runs = {}
    for w in preset.workers:
        log(f"scaling: {w} model worker(s)")
        cfg = job_config(survey, work / f"workers_{w}", preset, models, batch_size=batch_size,
                         workers=w, cpus_per_actor=actor_cpus(w, cores), device=actor_device(w),
                         model_threads=1)
        runs[str(w)] = run_job(cfg)
    one = runs[str(preset.workers[0])]["sources_per_s"]
    for w, r in runs.items():
        r["speedup_vs_1"] = r["sources_per_s"] / one
        r["efficiency"] = r["sources_per_s"] / (int(w) * one)
    return runs


def _size_runs(work: Path, preset: SizePreset, models: ModelSet,
               batch_size: int) -> dict[str, Any]:
    if preset.series_tile_size:
        preset = replace(preset, tile_size=preset.series_tile_size)
    runs = {}
    for tiles in preset.size_series:
        survey = make_survey(work, math.isqrt(tiles), preset, realistic=False, seed=tiles)
        log(f"scaling: survey of {tiles} tiles ({survey.n_sources} sources placed)")
        cfg = job_config(survey, work / f"size_{tiles}", preset, models, batch_size=batch_size,
                         workers=1, cpus_per_actor=actor_cpus(1, physical_cores()),
                         device=actor_device(1))
        runs[str(tiles)] = {"survey": survey, **run_job(cfg)}
    first = runs[str(preset.size_series[0])]
    for r in runs.values():
        r["time_ratio_vs_smallest"] = r["seconds"] / first["seconds"]
        r["sources_ratio_vs_smallest"] = r["sources"] / max(first["sources"], 1)
        r["peak_memory_ratio_vs_smallest"] = (r["memory"]["peak_total_mib"]
                                              / first["memory"]["peak_total_mib"])
    return runs


def _cluster_run(survey: BenchSurvey, work: Path, preset: SizePreset, models: ModelSet,
                 batch_size: int, cores: int) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    nodes = preset.cluster_nodes
    cpus = [max(1, cores // nodes + (1 if i < cores % nodes else 0)) for i in range(nodes)]
    # Whole-CPU actors: a fractional actor on every one-CPU node would leave no node a whole
    # CPU for a tile task (the job would wait forever). With nodes - 1 one-CPU actors, tiles
    # and models run on different nodes, so cutouts cross nodes through the object store.
    workers = max(1, nodes - 1)
    log(f"scaling: {nodes}-node cluster on this machine, CPUs per node {cpus}")
    previous = os.environ.get("OMP_NUM_THREADS")
    with stopwatch() as start:
        cluster = Cluster(initialize_head=True,
                          head_node_args={"num_cpus": cpus[0], "include_dashboard": False})
        for c in cpus[1:]:
            cluster.add_node(num_cpus=c)
        cluster.wait_for_nodes()
        ray_session(address=cluster.address)
    try:
        cfg = job_config(survey, work / "cluster", preset, models, batch_size=batch_size,
                         workers=workers, cpus_per_actor=1.0, device="cpu")
        warm_s = warm_up(cfg, preset.warmup)
        result = run_job(cfg)
        result["nodes_in_cluster"] = len(ray.nodes())
    finally:
        stop_ray(previous)
        cluster.shutdown()
    result |= {"nodes": nodes, "cpus_per_node": cpus, "cluster_start_s": start["seconds"],
               "warmup_job_s": warm_s}
    return result


def run(preset: SizePreset, models: ModelSet, survey: BenchSurvey, work: Path,
        batch_size: int) -> dict[str, Any]:
    cores = physical_cores()
    previous = os.environ.get("OMP_NUM_THREADS")
    ray_session()
    try:
        log("scaling: warm-up job")
        warm_s = warm_up(job_config(survey, work / "scaling", preset, models,
                                    batch_size=batch_size), preset.warmup)
        workers = _worker_runs(survey, work, preset, models, batch_size, cores)
        sizes = _size_runs(work, preset, models, batch_size)
    finally:
        stop_ray(previous)
    cluster = _cluster_run(survey, work, preset, models, batch_size, cores)
    same_workers = workers.get(str(cluster["workers"]))
    if same_workers:
        cluster["efficiency_vs_one_node_same_workers"] = (cluster["sources_per_s"]
                                                          / same_workers["sources_per_s"])
    eff = workers.get("2", {}).get("efficiency")
    return {"cores": cores, "survey": survey, "warmup_job_s": warm_s,
            "workers": workers, "efficiency_1_to_2_workers": eff, "cluster": cluster,
            "survey_size": sizes,
            "peak_memory_ratio_largest_vs_smallest":
                sizes[str(preset.size_series[-1])]["peak_memory_ratio_vs_smallest"]}


def plot(result: dict[str, Any], path: Any) -> None:
    fig, (ax1, ax2, ax3) = figure(3, width=4.3)
    ws = sorted(result["workers"], key=int)
    rates = [result["workers"][w]["sources_per_s"] for w in ws]
    ax1.plot([int(w) for w in ws], rates, "o-", label="one node")
    ax1.plot([int(w) for w in ws], [rates[0] * int(w) for w in ws], "k:", label="ideal")
    c = result["cluster"]
    ax1.plot([c["workers"]], [c["sources_per_s"]], "r*", ms=12,
             label=f"{c['nodes']}-node cluster")
    ax1.set_xlabel("model workers")
    ax1.set_ylabel("sources/s")
    ax1.set_title(f"workers on {result['cores']} cores")
    ax1.legend(fontsize=8)
    sizes = result["survey_size"]
    ts = sorted(sizes, key=int)
    ax2.plot([int(t) for t in ts], [sizes[t]["seconds"] for t in ts], "o-")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("tiles")
    ax2.set_ylabel("seconds")
    ax2.set_title("time vs survey size")
    ax3.plot([int(t) for t in ts], [sizes[t]["memory"]["peak_total_mib"] for t in ts], "o-",
             label="driver + Ray processes")
    ax3.plot([int(t) for t in ts], [sizes[t]["memory"]["peak_driver_mib"] for t in ts], "s-",
             label="driver")
    ax3.set_xscale("log")
    ax3.set_ylim(bottom=0)
    ax3.set_xlabel("tiles")
    ax3.set_ylabel("peak PSS (MiB)")
    ax3.set_title("peak memory vs survey size")
    ax3.legend(fontsize=8)
    save_figure(fig, path)
