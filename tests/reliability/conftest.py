"""Fixtures of the fault-injection suite: one small simulated field, model artefacts, one
uninterrupted reference run, and helpers to run the survey job as a killable CLI process.

The field is 640 x 640 px with 40 sources, Zarr chunks of 128 px and tiles of 512 px with a
128 px margin: 9 tiles whose 128 px corner chunk c/0/0 is read by tile r0000c0000 only, so a
fault on that chunk hits exactly one tile.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from galscale.config import DetectionConfig, SimConfig, SurveyJobConfig, TilingConfig

BIN = Path(sys.executable).parent
TILING = TilingConfig(tile_size=512, margin=128)
FIELD = SimConfig(size=640, n_sources=40, seed=23, chunk=128, name="reliability")
DETECTION = DetectionConfig(threshold_sigma=3.0)  # ~30 sources: few spurious detections
N_TILES = 9
RUN_ID = "rel"
ROLES = ("denoiser", "morphology", "redshift")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_same_catalog(got: pa.Table, expected: pa.Table, model_atol: float = 0.0) -> float:
    """Same catalog row for row, value for value (`galscale.catalog.catalog_differences`);
    returns the largest model-probability difference seen."""
    import numpy as np

    from galscale.catalog import catalog_differences

    problems = catalog_differences(got, expected, model_atol)
    assert not problems, problems
    worst = 0.0
    for name in expected.schema.names:
        if name.startswith("p_"):
            x, y = got[name].to_numpy(), expected[name].to_numpy()
            worst = max(worst, float(np.max(np.abs(x - y), initial=0.0, where=~np.isnan(y))))
    return worst


@dataclass
class Field:
    survey: str  # local Zarr path
    truth: pa.Table
    models: dict[str, str]  # role -> artefact folder or shipped name

    def config(self, out: str | Path, **kw) -> SurveyJobConfig:
        kw.setdefault("survey", self.survey)
        return SurveyJobConfig(out=str(out), run_id=RUN_ID, tiling=TILING, device="cpu",
                               detection=DETECTION, **{**self.models, **kw})

    def cli_args(self, out: str | Path, survey: str | None = None) -> list[str]:
        """`galscale classify` arguments equivalent to `config(out)`."""
        args = ["classify", "--survey", survey or self.survey, "--out", str(out), "--run-id",
                RUN_ID, "--tile-size", str(TILING.tile_size), "--margin", str(TILING.margin),
                "--device", "cpu", "--detect-threshold", str(DETECTION.threshold_sigma),
                "--quiet"]
        if set(self.models.values()) != set(ROLES):  # not the shipped names
            args += ["--models", str(Path(self.models["denoiser"]).parent)]
        return args


def _models(tmp: Path) -> dict[str, str]:
    """Shipped artefacts when present, else random-weight ones (reliability does not depend
    on model quality, only on every row being written exactly once)."""
    from galscale.registry import shipped_names

    if set(ROLES) <= set(shipped_names()):
        return {r: r for r in ROLES}
    import torch

    from galscale.models.denoiser import build_denoiser
    from galscale.models.morphology import build_d16_classifier
    from galscale.models.redshift import build_redshift_classifier
    from galscale.registry import save_artifact

    torch.manual_seed(0)
    modules = {"denoiser": (build_denoiser(), "galscale.models.denoiser:build_denoiser"),
               "morphology": (build_d16_classifier().eval().export(),
                              "galscale.models.morphology:build_disk_classifier"),
               "redshift": (build_redshift_classifier(),
                            "galscale.models.redshift:build_redshift_classifier")}
    for role, (module, builder) in modules.items():
        save_artifact(module, str(tmp / role), name=role, builder=builder, architecture={},
                      training={})
    return {r: str(tmp / r) for r in ROLES}


@pytest.fixture(scope="session")
def field(tmp_path_factory: pytest.TempPathFactory) -> Field:
    from galscale.sim.survey import simulate_survey, write_simulated_survey

    out = tmp_path_factory.mktemp("field")
    paths = write_simulated_survey(simulate_survey(FIELD), str(out))
    return Field(survey=paths["survey"], truth=pq.read_table(paths["truth"]),
                 models=_models(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="session")
def reference(field: Field, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One uninterrupted run on a local 2-CPU Ray: the catalog every faulty run must equal."""
    import ray

    from galscale.pipeline.job import run_survey_job

    out = tmp_path_factory.mktemp("reference")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address="local", num_cpus=2, log_to_driver=False)
    try:
        summary = run_survey_job(field.config(out), progress=False)
    finally:
        if started_here:
            ray.shutdown()
    assert summary.ok and summary.tiles_done == N_TILES, summary
    table = pq.read_table(summary.catalog)
    assert table.num_rows == summary.sources_in > 20
    return {"summary": summary, "catalog": table, "out": out,
            "bytes": Path(summary.catalog).read_bytes()}


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_ADDRESS": "",
           "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env
