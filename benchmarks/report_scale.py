"""Time `galscale report` on a 1-million-source catalog (issue: "builds in under a minute").

Synthesises a run folder with the real catalog schema (`galscale.catalog.catalog_schema` plus
the model and spectral columns), realistic flags and reasons, a matching 1,000,000-row truth
catalog, a spectral catalog and its input spectra (simulated prism spectra), summary.json and
provenance; the catalog positions lie on a small simulated survey, so the gallery re-cuts and
denoises real cutouts. No model is run on the million rows: the catalog columns are drawn at
random (P(disk) correlated with the synthetic truth), which costs the report the same.

    .venv/bin/python benchmarks/report_scale.py [--rows 1000000] [--spectra 3000]

Writes benchmarks/results/report_scale.json: wall seconds of the `galscale report` process and
of each section, its CPU seconds (user + system; the honest figure on a shared, loaded machine:
wall >= CPU / cores used), and the machine with its load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine_description, model_set, write_json  # noqa: E402

from galscale import catalog  # noqa: E402
from galscale.config import (  # noqa: E402
    NIRCAM_BANDS,
    REDSHIFT_CLASSES,
    SimConfig,
    SurveyJobConfig,
    to_json_dict,  # noqa: E402
)
from galscale.survey.flags import Flag  # noqa: E402

REASONS = {0: "", int(Flag.LOW_SNR): "low_snr", int(Flag.EDGE | Flag.MASKED):
           "edge: cutout crosses the survey edge; masked", int(Flag.BLENDED): "blended"}


def synth_run(work: Path, rows: int, n_spectra: int, seed: int = 0) -> dict[str, str]:
    """Write the synthetic run folder, truth and spectra under `work`; returns their paths."""
    from galscale.pipeline.spectra import JOINED_COLUMNS
    from galscale.registry import load_artifact
    from galscale.sim.spectra import simulate_spectra
    from galscale.sim.survey import simulate_survey, write_simulated_survey
    from galscale.spectra.io import simulated_batch, write_spectra_parquet

    rng = np.random.default_rng(seed)
    sim = write_simulated_survey(simulate_survey(SimConfig(size=512, n_sources=40, seed=seed)),
                                 str(work / "sim"))
    ny = nx = 512
    # truth: 1M sources on the survey's pixel grid
    kind = rng.choice(np.array(["disk", "non_disk", "star", "brown_dwarf"]), rows,
                      p=[0.45, 0.45, 0.07, 0.03])
    z = np.where(np.isin(kind, ["disk", "non_disk"]), rng.gamma(2.0, 1.2, rows), 0.0)
    z_class = np.where(kind == "brown_dwarf", "brown_dwarf", np.where(z >= 6, "high_z", "low_z"))
    tx, ty = rng.uniform(20, nx - 20, rows), rng.uniform(20, ny - 20, rows)
    truth = pa.table({"source_id": np.arange(rows, dtype=np.int64), "x": tx, "y": ty,
                      "kind": kind, "z_class": z_class, "redshift": z})
    pq.write_table(truth, work / "truth.parquet")
    # catalog: every truth source detected (0.05-px centroid error), model columns at random
    models = model_set(work)
    cfg = SurveyJobConfig(survey=sim["survey"], out=str(work / "runs"), run_id="million",
                          **models.paths())
    cols: dict[str, np.ndarray] = {
        "source_id": (np.arange(rows, dtype=np.int64) * 8), "tile_id": np.array(
            [f"r{i // 4:04d}c{i % 4:04d}" for i in rng.integers(0, 16, rows)], dtype=object),
        "ra": rng.uniform(53.1, 53.2, rows), "dec": rng.uniform(-27.8, -27.7, rows),
        "x": tx + rng.normal(0, 0.05, rows), "y": ty + rng.normal(0, 0.05, rows),
    }
    for b in NIRCAM_BANDS:
        flux = rng.lognormal(4, 1.5, rows)
        cols[f"flux_{b}"], cols[f"flux_err_{b}"] = flux, np.full(rows, 10.0)
        cols[f"mag_{b}"] = 31.4 - 2.5 * np.log10(flux)
    flag_values = rng.choice(np.array(list(REASONS)), rows, p=[0.7, 0.15, 0.1, 0.05])
    cols.update(flux_radius=rng.uniform(1, 10, rows), snr=rng.lognormal(2.5, 1, rows),
                flags=flag_values.astype(np.int64),
                flag_reason=np.array([REASONS[int(f)] for f in flag_values], dtype=object),
                masked_fraction=np.zeros(rows))
    is_disk = kind == "disk"
    cols["p_disk"] = np.clip(rng.beta(2, 2, rows) * 0.6 + 0.4 * is_disk, 0, 1).astype(np.float32)
    logits = rng.normal(0, 1, (rows, 3)) + 3 * (z_class[:, None] == np.array(REDSHIFT_CLASSES))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for k, c in enumerate(REDSHIFT_CLASSES):
        cols[f"p_{c}"] = probs[:, k].astype(np.float32)
    # spectra: simulated prism spectra for n_spectra sources, a synthetic embedding of them
    sample = np.sort(rng.choice(rows, n_spectra, replace=False))
    batch = simulated_batch(simulate_spectra(n_spectra, seed=seed))
    batch.ids = cols["source_id"][sample]
    write_spectra_parquet(batch, work / "spectra_input.parquet")
    k_clusters = 6
    cluster = rng.integers(0, k_clusters, n_spectra)
    centres = rng.normal(0, 5, (k_clusters, 2))
    spectral = pa.table({
        "id": batch.ids, "redshift": np.asarray(batch.z, float),
        "umap_x": centres[cluster, 0] + rng.normal(0, 1, n_spectra),
        "umap_y": centres[cluster, 1] + rng.normal(0, 1, n_spectra),
        "cluster": cluster.astype(np.int64), "cluster_prob": rng.uniform(0.5, 1, n_spectra),
        "recon_mse": rng.uniform(0, 1, n_spectra), "flags": np.zeros(n_spectra, np.int64),
        "flag_reason": np.full(n_spectra, "", dtype=object)})
    run_dir = work / "runs" / "million"
    run_dir.mkdir(parents=True)
    pq.write_table(spectral, run_dir / "spectra.parquet")
    table = catalog.to_table(cols)
    for source, target in JOINED_COLUMNS.items():
        full = np.full(rows, np.nan) if source != "flag_reason" else np.full(rows, None, object)
        full[sample] = spectral.column(source).to_numpy(zero_copy_only=False)
        table = table.append_column(target, pa.array(full, from_pandas=True))
    hashes = {r: load_artifact(p).sha256 for r, p in models.paths().items()}
    prov = catalog.provenance_record(survey=sim["survey"], run_id="million", model_hashes=hashes,
                                     config_json=json.dumps(to_json_dict(cfg), sort_keys=True),
                                     tiles=sorted(set(cols["tile_id"])))
    table = table.replace_schema_metadata({catalog.PROVENANCE_KEY: json.dumps(prov)})
    pq.write_table(table, run_dir / "catalog.parquet", compression="zstd")
    summary = {"run_id": "million", "survey": sim["survey"], "out": cfg.out, "tiles_total": 16,
               "tiles_done": 16, "tiles_skipped": 0, "tiles_empty": 0, "tiles_failed": {},
               "sources_in": rows, "rows_flagged": int((flag_values != 0).sum()),
               "sources_out": int((flag_values == 0).sum()),
               "sources_flagged": {}, "seconds": 0.0, "stage_seconds": {},
               "sources_per_second": {}, "model_hashes": hashes,
               "note": "synthetic run for the report benchmark: no model was run"}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return {"run": str(run_dir), "truth": str(work / "truth.parquet"),
            "spectra": str(work / "spectra_input.parquet"), "weights": models.weights}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--spectra", type=int, default=3000)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" /
                                             "report_scale.json"))
    args = parser.parse_args(argv)
    machine = machine_description(sys.argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        paths = synth_run(work, args.rows, args.spectra)
        synth_s = time.perf_counter() - t0
        size = (Path(paths["run"]) / "catalog.parquet").stat().st_size
        command = [sys.executable, "-m", "galscale.cli", "report", paths["run"], "--out",
                   str(work / "report"), "--truth", paths["truth"], "--spectra",
                   paths["spectra"]]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if proc.returncode:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            return proc.returncode
        numbers = json.loads((work / "report" / "report.json").read_text())
        figures = sorted(p.name for p in (work / "report").glob("*.png"))
    result = {
        "machine": machine, "rows": args.rows, "spectra": args.spectra,
        "catalog_bytes": size, "model_weights": paths["weights"],
        "synthesis_seconds": synth_s,
        "report_wall_seconds": wall,  # the whole `galscale report` process, imports included
        "report_cpu_seconds": cpu,  # user + system CPU of that process (all its threads)
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "report_section_seconds": numbers["seconds"],
        "report_section_cpu_seconds": numbers["cpu_seconds"],
        "figures": figures, "wall_under_one_minute": wall < 60,
        "cpu_under_one_minute": cpu < 60,  # what the wall time is on an otherwise idle machine
        "errors": numbers.get("errors", {}),
        "summary": numbers.get("summary_lines", []),
    }
    write_json(Path(args.out), result)
    print(json.dumps({k: result[k] for k in ("rows", "report_wall_seconds", "report_cpu_seconds",
                                             "report_section_seconds", "wall_under_one_minute",
                                             "cpu_under_one_minute")},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
