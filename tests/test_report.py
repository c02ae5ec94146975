"""The survey report on a real small run: simulated survey -> survey job on a local Ray (imaging
pass, then the spectral pass) -> `galscale report`. Checks every figure is a valid PNG, the page
links only files that exist, the numbers match the catalog, the gallery re-cuts exactly the
job's cutouts, missing data gives explanatory sections, S3 run folders work, and (when
Chromium is installed) the page renders in headless Chromium."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest

from galscale.cli import main
from galscale.config import SimConfig, SurveyJobConfig
from galscale.registry import SHIPPED_DIR

ROLES = ("denoiser", "morphology", "redshift", "spectral")
EXPECTED_FIGURES = {
    "gallery_random.png", "gallery_disk.png", "gallery_non_disk.png", "pdisk_distribution.png",
    "disk_fraction_vs_z.png", "zclass_fractions.png", "truth_disk.png", "truth_zclass_cm.png",
    "truth_zclass_roc.png", "spectra_umap.png", "spectra_redshifts.png", "spectra_medians.png",
    "throughput.png", "flags.png",
}


def _random_models(folder: Path) -> dict[str, str]:
    """Random-weight artefacts of the four models (used when shipped weights are absent)."""
    import torch

    from galscale.models.denoiser import build_denoiser
    from galscale.models.morphology import build_d16_classifier
    from galscale.models.redshift import build_redshift_classifier
    from galscale.models.spectral_vae import SpectralVAE
    from galscale.registry import save_artifact
    from galscale.spectra.embedding import FittedUmap
    from galscale.spectra.mixtures import GaussianMixtureArrays
    from galscale.spectra.model import SpectralEmbeddingModel
    from galscale.spectra.preprocess import PreprocessConfig

    torch.manual_seed(0)
    save_artifact(build_denoiser(), folder / "denoiser", name="denoiser",
                  builder="galscale.models.denoiser:build_denoiser", architecture={}, training={})
    save_artifact(build_d16_classifier().eval().export(), folder / "morphology",
                  name="morphology", builder="galscale.models.morphology:build_disk_classifier",
                  architecture={}, training={})
    save_artifact(build_redshift_classifier(), folder / "redshift", name="redshift",
                  builder="galscale.models.redshift:build_redshift_classifier",
                  architecture={}, training={})
    rng = np.random.default_rng(0)
    umap = FittedUmap(train_data=rng.normal(size=(200, 16)).astype(np.float32),
                      embedding=rng.normal(size=(200, 2)).astype(np.float32), a=1.58, b=0.9,
                      n_neighbors=10, min_dist=0.0, random_state=0, backend="umap-learn")
    mixture = GaussianMixtureArrays(weights=np.full(3, 1 / 3), means=rng.normal(size=(3, 2)),
                                    covariances=np.stack([np.eye(2)] * 3))
    SpectralEmbeddingModel(vae=SpectralVAE(2459, hidden=(32, 16), latent_dim=16).eval(),
                           preprocess=PreprocessConfig(), umap=umap,
                           mixture=mixture).save(folder / "spectral")
    return {role: str(folder / role) for role in ROLES}


def _models(folder: Path) -> dict[str, str]:
    if all((SHIPPED_DIR / role / "config.json").is_file() for role in ROLES):
        return {role: role for role in ROLES}
    return _random_models(folder)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run with spectra: 512-px simulated field, sources at the truth positions."""
    import ray

    from galscale.pipeline.job import run_survey_job
    from galscale.sim.spectra import simulate_spectra
    from galscale.sim.survey import simulate_survey, write_simulated_survey
    from galscale.spectra.io import simulated_batch, write_spectra_parquet

    root = tmp_path_factory.mktemp("report_run")
    paths = write_simulated_survey(simulate_survey(SimConfig(size=512, n_sources=30, seed=5)),
                                   str(root / "sim"))
    cfg = SurveyJobConfig(survey=paths["survey"], out=str(root / "runs"), run_id="r",
                          sources=paths["truth"], **_models(root / "models"))
    ray.init(address="local", num_cpus=2, log_to_driver=False)  # never a cluster started by others
    try:
        first = run_survey_job(cfg, progress=False)
        ids = np.sort(np.asarray(pq.read_table(first.catalog, columns=["source_id"])["source_id"]))
        batch = simulated_batch(simulate_spectra(len(ids) - 2, seed=0))
        batch.ids = ids[1:-1].astype(np.int64)  # two sources without a spectrum
        write_spectra_parquet(batch, root / "spectra.parquet")
        spectral_pass_error = ""
        try:  # the spectral pass: skips the finished tile, embeds spectra, joins them by id
            summary = run_survey_job(dataclasses.replace(
                cfg, stages=cfg.stages + ("spectra",), spectra=str(root / "spectra.parquet")),
                progress=False)
            assert summary.ok, summary
        except Exception as exc:  # reported by the spectroscopic test; the rest still runs
            spectral_pass_error = f"{type(exc).__name__}: {exc}"
    finally:
        ray.shutdown()
    assert first.ok, first
    return {"dir": root / "runs" / "r", "survey": paths["survey"], "truth": paths["truth"],
            "spectra": root / "spectra.parquet", "spectral_pass_error": spectral_pass_error,
            "catalog": pq.read_table(first.catalog)}


@pytest.fixture(scope="module")
def report(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(run["dir"]), "--out", str(out), "--per-group", "3",
                 "--spectra", str(run["spectra"])]) == 0
    return {"out": out, "numbers": json.loads((out / "report.json").read_text()),
            "html": (out / "index.html").read_text()}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.refs.append(value)
            if name == "id":
                self.ids.add(value)


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG header; raises on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_every_figure_is_a_png_and_the_page_links_only_existing_files(report):
    import matplotlib.image

    out = report["out"]
    pngs = {p.name for p in out.glob("*.png")}
    assert EXPECTED_FIGURES <= pngs, EXPECTED_FIGURES - pngs
    for name in pngs:
        w, h = _png_size(out / name)
        image = matplotlib.image.imread(out / name)  # decodes the whole file
        assert image.shape[:2] == (h, w) and w > 100 and h > 100
        assert image[..., :3].std() > 0.01, f"{name} is blank"
    links = _Links()
    links.feed(report["html"])
    files = set()
    for ref in links.refs:
        if ref.startswith("#"):
            assert ref[1:] in links.ids, f"anchor {ref} has no target"
            continue
        assert "://" not in ref and not ref.startswith(("/", "file:")), f"non-relative {ref}"
        assert (out / ref).is_file(), f"index.html links missing {ref}"
        files.add(ref)
    assert pngs <= files, f"figures not on the page: {pngs - files}"
    assert {"summary.txt", "report.json"} <= files
    assert "section failed" not in report["html"] and "errors" not in report["numbers"]


def test_report_numbers_match_the_catalog_and_truth(report, run):
    from galscale.evaluate.truth import compare_with_truth

    n, cat = report["numbers"], run["catalog"]
    p = np.asarray(cat["p_disk"], dtype=float)
    assert n["disk"]["scored"] == int(np.isfinite(p).sum())
    assert n["disk"]["called_disk"] == int((p > 0.5).sum())
    truth = compare_with_truth(cat, pq.read_table(run["truth"]))
    assert n["truth"]["matched_rows"] == truth["matched_rows"] > 0.8 * cat.num_rows
    assert n["truth"]["disk"]["n"] == truth["disk_galaxies_scored"]
    assert n["truth"]["disk"]["accuracy"] == pytest.approx(truth["disk_accuracy"])
    assert n["truth"]["zclass"]["accuracy"] == pytest.approx(truth["zclass_accuracy"])
    fractions = n["zclass"]["fractions"]
    assert sum(v["argmax_count"] for v in fractions.values()) == n["zclass"]["scored"]
    spectra = pq.read_table(run["dir"] / "spectra.parquet")
    assert n["spectra"]["spectra"] == spectra.num_rows == len(np.unique(cat["source_id"])) - 2
    assert sum(n["spectra"]["clusters"].values()) == n["spectra"]["assigned"]
    flags = np.asarray(cat["flags"])
    assert n["run"]["flagged_rows"] == int((flags != 0).sum())
    assert n["run"]["model_hashes"].keys() == {"denoiser", "morphology", "redshift"}
    text = (report["out"] / "summary.txt").read_text()
    assert f"{cat.num_rows:,} catalog rows" in text


def test_spectroscopic_redshifts_drive_the_disk_fraction_plot(report, run):
    assert not run["spectral_pass_error"], f"spectral pass of the job: {run['spectral_pass_error']}"
    cat = pq.read_table(run["dir"] / "catalog.parquet")
    n = report["numbers"]
    p = np.asarray(cat["p_disk"], dtype=float)
    z = np.asarray(cat["spec_redshift"].to_numpy(zero_copy_only=False), dtype=float)
    assert np.isnan(z).sum() == 2  # two sources have no spectrum
    assert n["disk"]["redshift_source"].startswith("spectroscopic")
    assert n["disk"]["with_redshift"] == int((np.isfinite(p) & np.isfinite(z)).sum()) > 0


def test_gallery_recuts_the_jobs_cutouts_and_shows_the_catalog_probabilities(report, run):
    from galscale.config import TilingConfig
    from galscale.report.gallery import morphology_cutouts
    from galscale.survey.extract import extract_tile
    from galscale.survey.sources import project_positions, read_position_table
    from galscale.survey.store import open_survey
    from galscale.survey.tiling import tiles_for

    groups = report["numbers"]["gallery"]["groups"]
    # the catalog's morph_resolved column reaches the gallery's choice
    assert report["numbers"]["gallery"]["morph_resolved_rows"] == int(
        np.count_nonzero(run["catalog"]["morph_resolved"].to_numpy(zero_copy_only=False)))
    cat = run["catalog"].to_pandas().set_index("source_id")
    shown = [s for g in groups.values() for s in g["sources"]]
    assert len(shown) >= 6
    for s in shown:
        assert s["p_disk"] == pytest.approx(float(cat.loc[s["source_id"], "p_disk"]))
    disk = [s["p_disk"] for s in groups["disk"]["sources"]]
    non_disk = [s["p_disk"] for s in groups["non_disk"]["sources"]]
    assert min(disk) >= max(non_disk) and disk == sorted(disk, reverse=True)
    survey = open_survey(run["survey"])
    (tile,) = tiles_for(survey.shape, TilingConfig())
    rows = extract_tile(survey, tile, positions=project_positions(
        read_position_table(run["truth"]), survey))
    chosen = [s["source_id"] for s in groups["disk"]["sources"]]
    index = [int(np.flatnonzero(rows["source_id"] == i)[0]) for i in chosen]
    again = morphology_cutouts(survey, rows["x"][index], rows["y"][index])
    np.testing.assert_array_equal(again, rows["morph_cutout"][index])


def test_gallery_prefers_resolved_unflagged_rows():
    from galscale.report.gallery import choose_sources

    rng = np.random.default_rng(0)
    p = rng.random(60)
    flags = np.zeros(60, dtype=np.int64)
    flags[::7] = 8  # blended
    resolved = np.zeros(60, dtype=bool)
    resolved[:30] = True
    pick = choose_sources(p, flags, per_group=4, resolved=resolved)
    shown = pick.all_rows()
    assert pick.pool.startswith("resolved") and len(shown) == 12
    assert resolved[shown].all() and (flags[shown] == 0).all()
    # too few resolved rows: the unflagged pool, as without the column
    few = np.zeros(60, dtype=bool)
    few[:5] = True
    assert choose_sources(p, flags, 4, resolved=few).pool == choose_sources(p, flags, 4).pool \
        == "unflagged"


def test_report_matches_truth_on_the_light_centroid_as_evaluate_does(run, tmp_path):
    """Truth whose profile centres sit 5 px from the light centroids (where the catalog's
    sources are): the report matches on the light centroid, as `evaluate catalog` does."""
    from galscale.evaluate.truth import compare_with_truth
    from galscale.report import build_report

    truth = pq.read_table(run["truth"])
    x, y = truth["x"], truth["y"]
    moved = (truth.drop_columns(["x", "y", "x_light", "y_light"])
             .append_column("x_light", x).append_column("y_light", y)
             .append_column("x", pa.compute.add(x, 5.0)).append_column("y", y))
    pq.write_table(moved, tmp_path / "truth.parquet")
    result = build_report(str(run["dir"]), tmp_path / "out", gallery=False,
                          truth=str(tmp_path / "truth.parquet"))
    expected = compare_with_truth(run["catalog"], moved)
    got = result.numbers["truth"]
    assert got["matched_rows"] == expected["matched_rows"] > 0.8 * run["catalog"].num_rows
    assert got["zclass"]["n"] == expected["zclass_scored"]
    assert got["disk"]["n"] == expected["disk_galaxies_scored"]


def test_sections_without_data_say_so(tmp_path):
    """A bare catalog (no model columns, no provenance, summary, spectra or truth)."""
    from galscale.catalog import catalog_schema

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    empty = {f.name: pa.array([], f.type) for f in catalog_schema()}
    pq.write_table(pa.table(empty, schema=catalog_schema()), run_dir / "catalog.parquet")
    from galscale.report import build_report

    result = build_report(str(run_dir), tmp_path / "out")
    page = result.index.read_text()
    for reason in ("no morphology stage", "no redshift stage", "no truth catalog",
                   "has no spectra", "no summary.json"):
        assert reason in page, reason
    assert "errors" not in result.numbers and "section failed" not in page


def test_not_a_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="catalog.parquet is missing"):
        main(["report", str(tmp_path), "--out", str(tmp_path / "out")])


def test_report_from_an_s3_run_folder_matches_the_local_one(report, run, s3_server, tmp_path):
    import s3fs

    from galscale.report import build_report

    bucket = s3_server.new_bucket()
    fs = s3fs.S3FileSystem(**s3_server.storage_options, skip_instance_cache=True)
    fs.put(str(run["dir"]), f"{bucket}/runs/r", recursive=True)
    result = build_report(f"{bucket}/runs/r", tmp_path, storage_options=s3_server.storage_options,
                          gallery=False, spectra=str(run["spectra"]), truth=run["truth"])
    local, remote = report["numbers"], result.numbers
    for key in ("disk", "zclass", "truth", "spectra"):
        assert json.dumps(remote[key], sort_keys=True) == json.dumps(local[key], sort_keys=True)
    assert remote["run"]["flags"] == local["run"]["flags"]
    assert (tmp_path / "spectra_medians.png").is_file()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed")
def test_page_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={shot}",
             "--window-size=1280,1600", "--hide-scrollbars",
             (report["out"] / "index.html").resolve().as_uri()],
            capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": profile})
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    import matplotlib.image

    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (1600, 1280)
    # the dark page header and the figures are drawn: far from a blank white page
    assert image[:60, :, :3].mean() < 0.4 and image[..., :3].std() > 0.1
