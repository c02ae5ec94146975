"""`galscale demo`: the README's first command, end to end on an embedded default.

1. simulate a small NIRCam survey (`galscale.sim`, default `SimConfig`) with its truth;
2. run the survey job on it on a local Ray with the shipped models;
3. simulate NIRSpec prism spectra for some catalogued sources and rerun the job with the same
   run id: finished tiles are skipped (resume) and the spectral stage adds clusters by source id;
4. print where the catalog went, the one-line summary, and how it compares with the truth.

The spectra are simulated independently of the imaging (seed 003's z > 4 populations) and
attached to catalogued sources only to exercise the join: their clusters say nothing about the
imaged galaxies.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from galscale.config import SimConfig, SurveyJobConfig, TilingConfig


def run_demo(out: str, n_spectra: int = 300, seed: int = 0, quiet: bool = False) -> int:
    """Simulate, classify, attach spectra, print the summary. Returns the exit status."""
    import ray

    from galscale.evaluate.truth import compare_with_truth
    from galscale.pipeline.job import run_survey_job
    from galscale.sim.spectra import simulate_spectra
    from galscale.sim.survey import simulate_survey, write_simulated_survey
    from galscale.spectra.io import simulated_batch, write_spectra_parquet

    root = Path(out).resolve()
    sim_config = SimConfig(size=2048, n_sources=800, seed=seed)  # a 1' x 1' field: ~2 min on 2 cores
    sim_dir = root / "sim"
    if not (sim_dir / "truth.parquet").exists():
        print(f"simulating a {sim_config.size}x{sim_config.size}-pixel survey with "
              f"{sim_config.n_sources} sources into {sim_dir} ...")
        write_simulated_survey(simulate_survey(sim_config), str(sim_dir))
    cfg = SurveyJobConfig(survey=str(sim_dir / "survey.zarr"), out=str(root / "runs"),
                          run_id="demo", tiling=TilingConfig())
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=os.cpu_count(), log_to_driver=False)
    first = run_survey_job(cfg, progress=not quiet)
    print(f"imaging pass: {first.one_line()}")

    spectra_file = root / "spectra.parquet"
    if not spectra_file.exists():
        ids = np.sort(np.asarray(pq.read_table(first.catalog, columns=["source_id"])["source_id"]))
        chosen = np.random.default_rng(seed).choice(ids, size=min(n_spectra, len(ids)),
                                                    replace=False)
        batch = simulated_batch(simulate_spectra(len(chosen), seed=seed))
        batch.ids = np.sort(chosen).astype(np.int64)
        write_spectra_parquet(batch, spectra_file)
    cfg = dataclasses.replace(cfg, stages=cfg.stages + ("spectra",), spectra=str(spectra_file))
    summary = run_survey_job(cfg, progress=not quiet)
    ray.shutdown()

    quality = compare_with_truth(pq.read_table(summary.catalog), pq.read_table(sim_dir / "truth.parquet"))
    print(json.dumps({"truth_comparison": quality, "spectra": summary.spectra}, indent=1,
                     default=str))
    print(f"catalog written to {summary.catalog}")
    print(f"imaging pass: {first.one_line()}")
    print(f"spectral pass (the imaging pass's tiles are skipped, spectra joined): "
          f"{summary.one_line()}")
    return 0 if summary.ok else 1
