"""Detection completeness of galscale.survey on a synthetic survey with known truth.

    .venv/bin/python benchmarks/detection_completeness.py [--shape 1200 1400] [--sources 400]

Writes a Gaussian-source survey (galscale.survey.synthetic), runs tiled detection (the same
per-tile code the pipeline runs, default TilingConfig scaled down), gathers owned sources and
prints completeness for truth S/N > 10 (recovered within 1 px), flux agreement, and timing.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from galscale.config import DetectionConfig
from galscale.survey.completeness import completeness, truth_snr
from galscale.survey.sources import detect_sources
from galscale.survey.store import open_survey
from galscale.survey.synthetic import make_gaussian_survey
from galscale.survey.tiling import make_tiles


def _sim_survey(url: str, args: argparse.Namespace):
    """galscale.sim survey at `url`; truth columns, per-band noise, Gaussian-equivalent size."""
    from galscale.config import SimConfig
    from galscale.sim.render import psf_fwhm_arcsec
    from galscale.sim.survey import simulate_survey
    from galscale.survey.store import write_survey

    sim = simulate_survey(SimConfig(size=args.shape[0], n_sources=args.sources, seed=args.seed,
                                    chunk=256))
    write_survey(url, sim.science, sim.error, sim.wcs_header,
                 pixel_scale_arcsec=sim.config.pixel_scale_arcsec, zeropoint_ab=31.4,
                 chunk=256)
    truth = {c: np.asarray(sim.truth.column(c).to_numpy(zero_copy_only=False), np.float64)
             for c in sim.truth.column_names if c in ("x", "y") or c.startswith("flux_")
             or c == "half_light_radius_arcsec"}
    noise = {b: float(np.median(sim.error[b])) for b in sim.error}
    pix = sim.config.pixel_scale_arcsec
    size = np.sqrt((truth["half_light_radius_arcsec"] / pix / 1.1774) ** 2
                   + (psf_fwhm_arcsec("F277W") / pix / 2.355) ** 2)
    return truth, noise, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=2, default=(1200, 1400))
    ap.add_argument("--sources", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tile-size", type=int, default=700)
    ap.add_argument("--margin", type=int, default=128)
    ap.add_argument("--snr-min", type=float, default=10.0)
    ap.add_argument("--sim", action="store_true",
                    help="use galscale.sim (GalSim, realistic profiles; square field of "
                    "--shape[0] px) instead of Gaussian sources")
    args = ap.parse_args()
    cfg = DetectionConfig()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"{tmp}/bench.zarr"
        if args.sim:
            truth, noise, size_px = _sim_survey(url, args)
        else:
            truth = make_gaussian_survey(url, shape=tuple(args.shape), n_sources=args.sources,
                                         seed=args.seed, chunk=256)
            noise, size_px = {b: 1.0 for b in cfg.bands}, None
        survey = open_survey(url)
        t0 = time.perf_counter()
        parts = []
        tiles = make_tiles(survey.shape, args.tile_size, args.margin)
        for tile in tiles:
            block = survey.read_block(survey.bands, tile.y0, tile.y1, tile.x0, tile.x1)
            parts.append(detect_sources(survey, block, tile, cfg))
        seconds = time.perf_counter() - t0
    det = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    assert len(np.unique(det["source_id"])) == len(det["source_id"])
    sn = truth_snr(truth, cfg.bands, noise, sigma_px=size_px,
                   q=None if size_px is None else np.ones_like(size_px))
    res = completeness(det, truth, sn, survey.bands, snr_min=args.snr_min)
    print(f"survey {args.shape[0]}x{args.shape[1]} px, {len(truth['x'])} truth sources "
          f"({int((sn > args.snr_min).sum())} with S/N > {args.snr_min:g}), "
          f"{len(tiles)} tiles, {len(det['source_id'])} detections (threshold "
          f"{cfg.threshold_sigma} sigma), {seconds:.1f} s")
    print(res.summary())


if __name__ == "__main__":
    main()
