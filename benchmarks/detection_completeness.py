"""Detection completeness of galscale.survey on synthetic surveys with known truth.

    .venv/bin/python benchmarks/detection_completeness.py [--shape 1200 1400] [--sources 400]
    .venv/bin/python benchmarks/detection_completeness.py --sim --shape 1024 1024
    .venv/bin/python benchmarks/detection_completeness.py --sim --shape 1024 1024 \
        --sources 400 --key sim_crowded  # --seeds 0 1 ... 19 by default

Writes a Gaussian-source survey (galscale.survey.synthetic) or, with --sim, realistic galscale.sim
fields (GalSim disks, spheroids, clumpy irregulars, mergers, stars, brown dwarfs; one per
seed), runs tiled detection (the same per-tile code the pipeline runs, default TilingConfig
scaled down), gathers owned sources and prints completeness for truth S/N > 10 (recovered
within 1 px), position and flux accuracy, spurious detections and timing. Results are merged
into benchmarks/results/detection_completeness.json under "gaussian" or `--key` ("sim").

Completeness depends on crowding. --sim fields have by default the source density of the
simulator's default survey (SimConfig: 3,000 sources on 4096 x 4096 px, i.e. 188 on 1024 x 1024
px, 717 per arcmin^2 down to F277W = 30); `--sources` sets another density.

Truth for --sim (docs/survey-format.md, "Detection completeness"): positions are the light
centroids x_light, y_light and S/N the noiseless AUTO-aperture S/N snr_det, both measured by
galscale.sim on each source's noiseless rendering in the detection stack. For comparison the
older definitions (profile centre x, y and a Gaussian-equivalent matched-filter S/N, an upper
bound on any aperture S/N) are evaluated too ("profile_centre_gaussian_snr").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from galscale.config import DetectionConfig, SimConfig
from galscale.survey.completeness import completeness, spurious, truth_snr
from galscale.survey.sources import detect_sources
from galscale.survey.store import open_survey
from galscale.survey.synthetic import make_gaussian_survey
from galscale.survey.tiling import make_tiles

RESULTS = Path(__file__).parent / "results" / "detection_completeness.json"
POINT_KINDS = ("star", "brown_dwarf")


def default_density_sources(size_px: int) -> int:
    """Sources on a square field of `size_px` at the simulator's default survey density."""
    d = SimConfig()
    return round(d.n_sources * (size_px / d.size) ** 2)


def _sim_survey(url: str, size: int, n_sources: int, seed: int) -> dict[str, np.ndarray]:
    """galscale.sim field at `url`; returns its truth columns plus `size_px` and `gauss_snr`."""
    from galscale.sim.render import psf_encircled_energy_curves, psf_fwhm_arcsec
    from galscale.sim.survey import simulate_survey
    from galscale.survey.psf import PSF_ATTR
    from galscale.survey.store import write_survey

    sim = simulate_survey(SimConfig(size=size, n_sources=n_sources, seed=seed, chunk=256))
    write_survey(url, sim.science, sim.error, sim.wcs_header,
                 pixel_scale_arcsec=sim.config.pixel_scale_arcsec, zeropoint_ab=31.4,
                 chunk=256, attrs={PSF_ATTR: psf_encircled_energy_curves(
                     list(sim.science), sim.config.pixel_scale_arcsec)})
    truth: dict[str, np.ndarray] = {}
    for c in sim.truth.column_names:
        v = sim.truth.column(c).to_numpy(zero_copy_only=False)
        truth[c] = v if v.dtype == object else np.asarray(v, np.float64)
    noise = {b: float(np.median(sim.error[b])) for b in sim.error}
    pix = sim.config.pixel_scale_arcsec
    size_px = np.sqrt((np.nan_to_num(truth["half_light_radius_arcsec"]) / pix / 1.1774) ** 2
                      + (psf_fwhm_arcsec("F277W") / pix / 2.355) ** 2)
    truth["gauss_snr"] = truth_snr(truth, DetectionConfig().bands, noise, sigma_px=size_px,
                                   q=np.ones_like(size_px))
    return truth


def _detect(url: str, cfg: DetectionConfig, tile_size: int, margin: int):
    survey = open_survey(url)
    t0 = time.perf_counter()
    parts = []
    tiles = make_tiles(survey.shape, tile_size, margin)
    for tile in tiles:
        block = survey.read_block(survey.bands, tile.y0, tile.y1, tile.x0, tile.x1)
        parts.append(detect_sources(survey, block, tile, cfg))
    det = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if len(np.unique(det["source_id"])) != len(det["source_id"]):
        raise RuntimeError("duplicate source_id across tiles")
    return survey, det, len(tiles), time.perf_counter() - t0


def _figures(det, truth, sn, bands, snr_min, position) -> dict[str, Any]:
    res = completeness(det, truth, sn, bands, snr_min=snr_min, position=position)
    n_sp, n_all = spurious(det, truth, 2.0, position)
    n_sp5, n_5 = spurious(det, truth, 2.0, position, det_snr_min=5.0)
    out = dataclasses.asdict(res)
    out.update(summary=res.summary(), n_detections=n_all, spurious_within_2px=n_sp,
               spurious_fraction=n_sp / max(n_all, 1), n_detections_snr_ge_5=n_5,
               spurious_snr_ge_5=n_sp5, spurious_fraction_snr_ge_5=n_sp5 / max(n_5, 1))
    return out


BLEND_BINS = ((0.0, 0.1, "< 0.1"), (0.1, 1.0, "0.1 - 1"),
              (1.0, np.inf, ">= 1 (a neighbour outshines the core)"))


def _class_groups(truth) -> np.ndarray:
    """Point sources, and each galaxy morphology."""
    return np.where(np.isin(truth["kind"], POINT_KINDS), "point",
                    np.asarray(truth["morph_type"], dtype=object)).astype(str)


def _blend_groups(truth) -> np.ndarray:
    """BLEND_BINS of the simulator's blend_ratio (other sources' light on the core / own)."""
    ratio = np.asarray(truth["blend_ratio"], np.float64)
    out = np.full(len(ratio), BLEND_BINS[-1][2], dtype=object)
    for lo, hi, name in BLEND_BINS:
        out[(ratio >= lo) & (ratio < hi)] = name
    return out.astype(str)


def _isolated_class_groups(truth) -> np.ndarray:
    """`_class_groups` of the isolated sources (first BLEND_BINS bin); the rest "blended"."""
    return np.where(_blend_groups(truth) == BLEND_BINS[0][2], _class_groups(truth), "blended")


def _by_group(det, truth, sn, bands, snr_min, position, groups: np.ndarray) -> dict[str, Any]:
    """Completeness and flux agreement within each group of truth sources."""
    out = {}
    for g in sorted(set(groups)):
        r = completeness(det, truth, np.where(groups == g, sn, -np.inf), bands, snr_min=snr_min,
                         position=position)
        out[g] = {"n_truth": r.n_truth, "n_recovered": r.n_recovered,
                  "completeness": r.completeness if r.n_truth else None,
                  "flux_within_3sigma": r.flux_within_3sigma,
                  "median_flux_ratio": r.median_flux_ratio}
    return out


SNR_EDGES = (3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 300.0, np.inf)
FIGURE = Path(__file__).parents[1] / "docs" / "img" / "detection_completeness.png"


def _completeness_vs_snr(det, truth, sn, bands, position) -> dict[str, list[dict[str, Any]]]:
    """Completeness in bins of truth S/N (SNR_EDGES), for all, isolated and blended sources."""
    isolated = _blend_groups(truth) == BLEND_BINS[0][2]
    curves: dict[str, list[dict[str, Any]]] = {}
    for name, keep in (("all", np.ones(len(sn), bool)), ("isolated", isolated),
                       ("blended", ~isolated)):
        rows = []
        for lo, hi in zip(SNR_EDGES[:-1], SNR_EDGES[1:], strict=True):
            in_bin = keep & (sn > lo) & (sn <= hi)
            r = completeness(det, truth, np.where(in_bin, sn, -np.inf), bands, snr_min=lo,
                             position=position)
            rows.append({"snr_lo": lo, "snr_hi": hi, "n_truth": r.n_truth,
                         "n_recovered": r.n_recovered,
                         "completeness": r.completeness if r.n_truth else None})
        curves[name] = rows
    return curves


def _curve_points(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(bin centre S/N, completeness %) of one `completeness_vs_snr` curve; the open last bin
    is drawn at 3 x its lower edge."""
    lo = np.array([r["snr_lo"] for r in rows])
    hi = np.array([r["snr_hi"] for r in rows])
    c = np.array([r["completeness"] for r in rows], np.float64)
    return np.sqrt(lo * np.where(np.isfinite(hi), hi, 3 * lo)), 100 * c


def _plot_completeness(curves: dict[str, list[dict[str, Any]]], n_fields: int, density: float,
                       path: Path, others: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """Completeness against truth S/N, one line per group, the 95 % target and S/N 10 marked;
    `others`: "all" curves of other runs (label -> rows), drawn dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for (name, rows), style in zip(curves.items(), ("k-o", "C0-s", "C3-^"), strict=False):
        n = sum(r["n_truth"] for r in rows)
        ax.plot(*_curve_points(rows), style, ms=4, label=f"{name} ({n} sources)")
    for label, rows in (others or {}).items():
        ax.plot(*_curve_points(rows), "--", color="0.4", lw=1, label=label)
    ax.axhline(95, color="0.5", ls=":", lw=1)
    ax.axvline(10, color="0.5", ls="--", lw=1)
    ax.set(xscale="log", xlabel="truth S/N (noiseless AUTO aperture, detection stack)",
           ylabel="recovered within 1 px (%)", ylim=(0, 102),
           title=f"detection completeness: {n_fields} simulated fields, "
           f"{density:.0f} sources / arcmin$^2$")
    ax.title.set_fontsize(10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _recovered(group: dict[str, Any]) -> str:
    """'recovered/total (percent)' of one `_by_group` entry."""
    n, k = group["n_truth"], group["n_recovered"]
    return f"{k}/{n}" + (f" ({100 * k / n:.1f}%)" if n else "")


def _print(title: str, fig: dict[str, Any]) -> None:
    print(f"  {title}: {fig['summary']}")
    print(f"    detections {fig['n_detections']}, with no truth source within 2 px "
          f"{fig['spurious_within_2px']} ({100 * fig['spurious_fraction']:.1f}%); of the "
          f"{fig['n_detections_snr_ge_5']} with S/N >= 5: {fig['spurious_snr_ge_5']} "
          f"({100 * fig['spurious_fraction_snr_ge_5']:.1f}%)")


def _merge_results(path: Path, key: str, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    old[key] = payload
    path.write_text(json.dumps(old, indent=1, default=float) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=2, default=(1200, 1400))
    ap.add_argument("--sources", type=int, default=None,
                    help="sources per field (Gaussian: 400; --sim: the simulator's default "
                    "density for --shape, 188 on 1024 px)")
    ap.add_argument("--seed", type=int, default=0, help="Gaussian survey seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(20)),
                    help="--sim field seeds (0-19)")
    ap.add_argument("--tile-size", type=int, default=700)
    ap.add_argument("--margin", type=int, default=128)
    ap.add_argument("--snr-min", type=float, default=10.0)
    ap.add_argument("--sim", action="store_true",
                    help="use galscale.sim (GalSim, realistic profiles; square fields of "
                    "--shape[0] px) instead of Gaussian sources")
    ap.add_argument("--deblend-cont", type=float, default=DetectionConfig().deblend_cont,
                    help="SEP deblending contrast to try (default: the shipped DetectionConfig)")
    ap.add_argument("--key", default="sim",
                    help="--sim: key of the results JSON to write (default sim)")
    ap.add_argument("--no-write", action="store_true", help="do not update the results JSON")
    ap.add_argument("--results", type=Path, default=RESULTS, help="results JSON to update")
    ap.add_argument("--figure", type=Path, default=None,
                    help="completeness-vs-S/N picture (--sim; default docs/img/"
                    "detection_completeness.png for --key sim, none otherwise)")
    args = ap.parse_args()
    if args.sources is None:
        args.sources = default_density_sources(args.shape[0]) if args.sim else 400
    if args.figure is None and args.key == "sim":
        args.figure = FIGURE
    cfg = dataclasses.replace(DetectionConfig(), deblend_cont=args.deblend_cont)
    common = {"detection_config": dataclasses.asdict(cfg), "snr_min": args.snr_min,
              "max_offset_px": 1.0, "tile_size": args.tile_size, "margin": args.margin,
              "sources_per_field": args.sources}
    if not args.sim:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"{tmp}/bench.zarr"
            truth = make_gaussian_survey(url, shape=tuple(args.shape), n_sources=args.sources,
                                         seed=args.seed, chunk=256)
            survey, det, n_tiles, seconds = _detect(url, cfg, args.tile_size, args.margin)
        sn = truth_snr(truth, cfg.bands, {b: 1.0 for b in cfg.bands})
        fig = _figures(det, truth, sn, survey.bands, args.snr_min, ("x", "y"))
        print(f"Gaussian survey {args.shape[0]}x{args.shape[1]} px, {len(truth['x'])} sources, "
              f"{n_tiles} tiles, {seconds:.1f} s")
        _print("truth S/N = matched-filter S/N of the Gaussian", fig)
        payload = dict(common, shape=list(args.shape), seed=args.seed, seconds=seconds, **fig)
        if not args.no_write:
            _merge_results(args.results, "gaussian", payload)
        return
    fields, pooled = [], {"det": [], "truth": []}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"{tmp}/bench.zarr"
            truth = _sim_survey(url, args.shape[0], args.sources, seed)
            survey, det, n_tiles, seconds = _detect(url, cfg, args.tile_size, args.margin)
        light = _figures(det, truth, truth["snr_det"], survey.bands, args.snr_min,
                         ("x_light", "y_light"))
        centre = _figures(det, truth, truth["gauss_snr"], survey.bands, args.snr_min, ("x", "y"))
        print(f"galscale.sim field seed {seed}: {args.shape[0]} px square, {args.sources} "
              f"sources, {n_tiles} tiles, detection {seconds:.1f} s")
        _print("truth light centroid, noiseless AUTO S/N", light)
        _print("(older definitions: profile centre, Gaussian S/N)", centre)
        fields.append({"seed": seed, "seconds": seconds, "light_centroid_aperture_snr": light,
                       "profile_centre_gaussian_snr": centre,
                       "by_class": _by_group(det, truth, truth["snr_det"], survey.bands,
                                             args.snr_min, ("x_light", "y_light"),
                                             _class_groups(truth))})
        off = max(args.shape[0], 1) * 10  # keep pooled fields apart in x
        pooled["det"].append(dict(det, x=det["x"] + off * len(pooled["det"])))
        pooled["truth"].append(dict(truth, x_light=truth["x_light"]
                                    + off * len(pooled["truth"])))
    det = {k: np.concatenate([d[k] for d in pooled["det"]]) for k in pooled["det"][0]}
    truth = {k: np.concatenate([t[k] for t in pooled["truth"]])
             for k in ("x_light", "y_light", "snr_det", "kind", "morph_type", "blend_ratio")
             + tuple(c for c in pooled["truth"][0] if c.startswith("flux_"))}
    total = _figures(det, truth, truth["snr_det"], survey.bands, args.snr_min,
                     ("x_light", "y_light"))
    print(f"all {len(args.seeds)} fields:")
    _print("truth light centroid, noiseless AUTO S/N", total)
    groups = {name: _by_group(det, truth, truth["snr_det"], survey.bands, args.snr_min,
                              ("x_light", "y_light"), split(truth))
              for name, split in (("by_class", _class_groups), ("by_blending", _blend_groups),
                                  ("isolated_by_class", _isolated_class_groups))}
    for title, key in (("core blend ratio", "by_blending"),
                       ("isolated (blend ratio < 0.1)", "isolated_by_class")):
        for name, g in sorted(groups[key].items()):
            if name != "blended":
                print(f"    {title} {name}: {_recovered(g)}")
    curves = _completeness_vs_snr(det, truth, truth["snr_det"], survey.bands,
                                  ("x_light", "y_light"))
    for name, rows in curves.items():
        print(f"    {name} by S/N: " + ", ".join(
            f"{r['snr_lo']:g}-{r['snr_hi']:g}: {r['n_recovered']}/{r['n_truth']}" for r in rows))
    area_arcmin2 = (args.shape[0] * SimConfig().pixel_scale_arcsec / 60.0) ** 2
    payload = dict(common, size_px=args.shape[0], seeds=args.seeds,
                   sources_per_arcmin2=args.sources / area_arcmin2, pooled=total,
                   completeness_vs_snr=curves,
                   blend_ratio_definition="galscale.sim blend_ratio: the other sources' "
                   "noiseless light within 3 px of the light centroid over the source's own",
                   **groups, fields=fields)
    print(f"    density: {args.sources / area_arcmin2:.0f} sources per arcmin^2")
    if not args.no_write:
        _merge_results(args.results, args.key, payload)
        if args.figure is not None:
            saved = json.loads(args.results.read_text())
            others = {f"all, {k}: {v['sources_per_arcmin2']:.0f} / arcmin$^2$":
                      v["completeness_vs_snr"]["all"] for k, v in saved.items()
                      if k != args.key and "sources_per_arcmin2" in v}
            _plot_completeness(curves, len(args.seeds), args.sources / area_arcmin2,
                               args.figure, others)
            print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
