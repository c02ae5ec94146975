"""The plain baseline: what a user would write without galscale's pipeline.

One process, one PyTorch `DataLoader` over the survey's tiles (each item: read the tile, detect
and cut out with `galscale.survey.extract.extract_tile`, the same survey functions the pipeline
calls), then the same models batch by batch (`denoise_batch`, `disk_probability`,
`redshift_probabilities`), and one Parquet file at the end. No Ray, no overlap of reading and
inference, no per-tile resume.

    .venv/bin/python benchmarks/plain_baseline.py SURVEY.zarr OUT.parquet \
        --denoiser D --morphology M --redshift R [--tile-size 2048 --margin 128]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from galscale.config import REDSHIFT_CLASSES, DetectionConfig, TilingConfig
from galscale.models.denoiser import denoise_batch
from galscale.models.morphology import disk_probability
from galscale.models.redshift import redshift_probabilities
from galscale.registry import load_model
from galscale.survey.extract import CUTOUT_COLUMNS, extract_tile
from galscale.survey.store import open_survey
from galscale.survey.tiling import tiles_for


class TileCutouts(Dataset):
    """Map-style dataset: item i = the catalog columns and cutouts of tile i's owned sources."""

    def __init__(self, survey_url: str, tiling: TilingConfig, detection: DetectionConfig) -> None:
        self.survey = open_survey(survey_url)
        self.tiles = tiles_for(self.survey.shape, tiling)
        self.detection = detection

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return extract_tile(self.survey, self.tiles[i], detection=self.detection)


def keep_numpy(item: dict[str, Any]) -> dict[str, Any]:
    """collate_fn: the tile's columns as they are (NumPy), no conversion to tensors."""
    return item


@dataclass
class BaselineResult:
    rows: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def sources_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def run_plain_baseline(survey_url: str, out_path: str, *, denoiser: str, morphology: str,
                       redshift: str, tiling: TilingConfig | None = None,
                       detection: DetectionConfig | None = None,
                       batch_size: int = 64) -> BaselineResult:
    """Classify every source of the survey in one process; one Parquet file at `out_path`."""
    tiling, detection = tiling or TilingConfig(), detection or DetectionConfig()
    started = time.perf_counter()
    den = load_model(denoiser).export()
    morph = load_model(morphology)
    zclass = load_model(redshift)
    loader = DataLoader(TileCutouts(survey_url, tiling, detection), batch_size=None,
                        shuffle=False, num_workers=0, collate_fn=keep_numpy)
    parts: list[pa.Table] = []
    read_s = model_s = 0.0
    t = time.perf_counter()
    for cols in loader:
        read_s += time.perf_counter() - t
        t = time.perf_counter()
        n = len(cols["source_id"])
        images = cols["morph_cutout"]
        usable = np.isfinite(images).all(axis=(1, 2, 3)) & (cols["masked_fraction"] < 1.0)
        p_disk = np.full(n, np.nan, np.float32)
        if usable.any():
            clean = denoise_batch(den, images[usable], batch_size=batch_size)
            p_disk[usable] = disk_probability(morph, clean, batch_size=batch_size)
        probs = redshift_probabilities(zclass, cols["multiband_flux"], cols["multiband_err"],
                                       batch_size=batch_size)
        scalars = {k: v for k, v in cols.items() if k not in CUTOUT_COLUMNS}
        scalars["p_disk"] = p_disk
        for k, name in enumerate(REDSHIFT_CLASSES):
            scalars[f"p_{name}"] = probs[:, k]
        parts.append(pa.table(scalars))
        model_s += time.perf_counter() - t
        t = time.perf_counter()
    table = pa.concat_tables(parts) if parts else pa.table({})
    pq.write_table(table, out_path)
    write_s = time.perf_counter() - t
    return BaselineResult(rows=table.num_rows, seconds=time.perf_counter() - started,
                          stage_seconds={"tiles_and_cutouts": read_s, "models": model_s,
                                         "write": write_s})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("survey")
    ap.add_argument("out")
    ap.add_argument("--denoiser", default="denoiser")
    ap.add_argument("--morphology", default="morphology")
    ap.add_argument("--redshift", default="redshift")
    ap.add_argument("--tile-size", type=int, default=TilingConfig.tile_size)
    ap.add_argument("--margin", type=int, default=TilingConfig.margin)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    result = run_plain_baseline(args.survey, args.out, denoiser=args.denoiser,
                                morphology=args.morphology, redshift=args.redshift,
                                tiling=TilingConfig(args.tile_size, args.margin),
                                batch_size=args.batch_size)
    print(f"{result.rows} sources in {result.seconds:.1f} s = {result.sources_per_s:.2f} "
          f"sources/s; stages {result.stage_seconds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
