"""Spectral embedding: runs `benchmarks/spectral_embedding.py` (owned by the spectral module)
at the preset's sizes and draws its results. umap-learn against cuML only where a GPU is
present (both backends are run there, with 1,000,000 spectra added at the full size)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from common import SizePreset, figure, log, physical_cores, save_figure


def _run_script(preset: SizePreset, out_dir: Path, tag: str, backend: str,
                sizes: tuple[int, ...]) -> dict[str, Any]:
    import spectral_embedding

    argv = ["--sizes", *map(str, sizes), "--compare-size", str(preset.spectral_compare),
            "--backend", backend, "--threads", str(physical_cores()), "--tag", tag,
            "--out-dir", str(out_dir)]
    threads = torch.get_num_threads()
    try:
        spectral_embedding.main(argv)
    finally:
        torch.set_num_threads(threads)
    path = out_dir / f"spectral_embedding_{tag}.json"
    return {"file": path.name, "argv": argv, **json.loads(path.read_text())}


def run(preset: SizePreset, out_dir: Path) -> dict[str, Any]:
    gpu = torch.cuda.is_available()
    if not gpu:
        log(f"spectral embedding: umap-learn at {preset.spectral_sizes}")
        return {"backends": {"umap-learn": _run_script(preset, out_dir, preset.name, "umap-learn",
                                                       preset.spectral_sizes)},
                "cuml_vs_umap_learn": "no GPU: cuML not run"}
    sizes = preset.spectral_sizes + ((1_000_000,) if preset.name == "full" else ())
    backends = {}
    for backend in ("cuml", "umap-learn"):
        log(f"spectral embedding: {backend} at {sizes}")
        try:
            backends[backend] = _run_script(preset, out_dir, f"{preset.name}_{backend}", backend,
                                            sizes if backend == "cuml" else preset.spectral_sizes)
        except Exception as exc:  # cuML missing on this GPU machine: say so
            backends[backend] = {"error": f"{type(exc).__name__}: {exc}"}
    return {"backends": backends, "cuml_vs_umap_learn": "see backends"}


STAGES = ("preprocess_s", "encode_s", "umap_fit_s", "umap_transform_rest_s", "gmm_select_s")


def plot(result: dict[str, Any], path: Any) -> None:
    fig, (ax,) = figure(1, width=6.0)
    for backend, res in result["backends"].items():
        rows = res.get("sizes", [])
        if not rows:
            continue
        ns = [r["n"] for r in rows]
        for stage in STAGES:
            ax.plot(ns, [max(r.get(stage, 0.0), 1e-3) for r in rows], "o-",
                    label=f"{backend}: {stage[:-2]}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("spectra")
    ax.set_ylabel("seconds")
    ax.set_title("spectral embedding, time per stage")
    ax.legend(fontsize=7)
    save_figure(fig, path)
