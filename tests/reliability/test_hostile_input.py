"""Corrupt and hostile input: each gives a flagged row or a refused input with a clear reason,
and every source that goes in comes out (sources in = clean rows + flagged rows)."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import zarr

from galscale.pipeline.job import run_survey_job
from galscale.survey.flags import Flag


def _chunk_of(x: float, y: float, chunk: int = 128) -> str:
    return f"{int(round(y)) // chunk}/{int(round(x)) // chunk}"


@pytest.fixture(scope="module")
def damaged_run(field, tmp_path_factory):
    """The field with a deleted chunk, a chunk of random bytes, NaN and inf pixels, measured
    at a position catalog (truth RA/Dec) with two duplicated ids and one position off the
    survey; run through the real survey job."""
    tmp = tmp_path_factory.mktemp("damaged")
    store = tmp / "damaged.zarr"
    shutil.copytree(field.survey, store)
    truth = field.truth
    x, y = np.asarray(truth["x"]), np.asarray(truth["y"])
    victims = {"deleted": 0, "random": 1, "nan": 2, "inf": 3}
    deleted = f"sci/F150W/c/{_chunk_of(x[0], y[0])}"
    (store / deleted).unlink()
    random_key = f"sci/F277W/c/{_chunk_of(x[1], y[1])}"
    (store / random_key).write_bytes(np.random.default_rng(0).bytes(4096))
    band = zarr.open_array(str(store / "sci" / "F200W"), mode="r+")
    for victim, value in (("nan", np.nan), ("inf", np.inf)):
        i = victims[victim]
        yy, xx = int(round(y[i])), int(round(x[i]))
        band[max(yy - 4, 0):yy + 5, max(xx - 4, 0):xx + 5] = value
    ids = np.asarray(truth["source_id"])
    ra, dec = np.asarray(truth["ra"]), np.asarray(truth["dec"])
    positions = pa.table({
        "id": np.concatenate([ids, ids[[5, 6]], [999_999]]),
        "ra": np.concatenate([ra, ra[[5, 6]], [ra[0] + 1.0]]),  # + 1 deg: off the survey
        "dec": np.concatenate([dec, dec[[5, 6]], [dec[0]]]),
    })
    pq.write_table(positions, tmp / "positions.parquet")
    ray.init(address="local", num_cpus=2, log_to_driver=False)
    try:
        summary = run_survey_job(field.config(tmp / "out", survey=str(store),
                                              sources=str(tmp / "positions.parquet")),
                                 progress=False)
    finally:
        ray.shutdown()
    return {"summary": summary, "catalog": pq.read_table(summary.catalog), "ids": ids,
            "positions": positions, "deleted": deleted, "random": random_key,
            "victims": {k: ids[i] for k, i in victims.items()}}


def _row(table: pa.Table, input_id: int) -> dict:
    rows = table.filter(pa.compute.equal(table["input_id"], input_id)).to_pylist()
    assert len(rows) == 1, (input_id, len(rows))
    return rows[0]


def test_damaged_survey_every_input_source_comes_out_flagged_or_clean(damaged_run):
    summary, table = damaged_run["summary"], damaged_run["catalog"]
    n_in = damaged_run["positions"].num_rows
    flags = np.asarray(table["flags"])
    print("flag counts:", summary.sources_flagged, "rows:", table.num_rows)
    assert summary.ok, summary.tiles_failed
    assert table.num_rows == summary.sources_in == n_in  # nothing lost, nothing added
    assert summary.sources_out + summary.rows_flagged == n_in
    assert int(np.count_nonzero(flags)) == summary.rows_flagged
    assert len(np.unique(np.asarray(table["source_id"]))) == n_in  # ids stay unique
    reasons = table["flag_reason"].to_pylist()
    assert all(r for r, f in zip(reasons, flags, strict=True) if f)  # every flag has a reason
    for column in ("p_disk", "p_low_z", "p_high_z", "p_brown_dwarf"):
        p = np.asarray(table[column], dtype=float)
        usable = (flags & int(Flag.NO_MORPHOLOGY)) == 0 if column == "p_disk" else \
            np.ones(len(p), bool)
        assert np.isfinite(p[usable]).all(), column  # no NaN/inf leaks into a probability


def test_deleted_and_random_chunks_flag_the_sources_over_them(damaged_run):
    table, victims = damaged_run["catalog"], damaged_run["victims"]
    row = _row(table, victims["deleted"])
    assert row["flags"] & int(Flag.MISSING_DATA)
    assert f"missing chunk {damaged_run['deleted']}" in row["flag_reason"]
    row = _row(table, victims["random"])
    assert row["flags"] & int(Flag.MISSING_DATA)
    assert f"corrupt chunk {damaged_run['random']}" in row["flag_reason"]


def test_nan_and_inf_pixels_are_flagged(damaged_run):
    table, victims = damaged_run["catalog"], damaged_run["victims"]
    for kind in ("nan", "inf"):
        row = _row(table, victims[kind])
        assert row["flags"] & int(Flag.MASKED | Flag.NO_DATA | Flag.NO_MORPHOLOGY), (kind, row)
        print(kind, "->", row["flag_reason"])


def test_duplicate_and_off_survey_input_ids(damaged_run):
    table, ids = damaged_run["catalog"], damaged_run["ids"]
    input_ids = np.asarray(table["input_id"])
    for dup in ids[[5, 6]]:
        rows = table.filter(pa.compute.equal(table["input_id"], dup)).to_pylist()
        assert len(rows) == 2 and rows[0]["source_id"] != rows[1]["source_id"]
        for row in rows:  # both copies kept, both flagged with the reason
            assert row["flags"] & int(Flag.DUPLICATE_INPUT_ID)
            assert f"input id {dup} appears 2 times" in row["flag_reason"]
        print("duplicate input id", dup, "->", [r["flag_reason"] for r in rows])
    off = _row(table, 999_999)
    assert off["flags"] & int(Flag.OFF_SURVEY) and "outside" in off["flag_reason"]
    assert sorted(set(input_ids.tolist())) == sorted(set(ids.tolist()) | {999_999})


# --- refused inputs: no Ray needed ------------------------------------------------------------


class _Payload:
    """Unpickling this runs `Path(marker).write_text(...)`: proof that code would execute."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("pwned",))


def _artefact(folder: Path, weights: bytes, builder: str, architecture: dict | None = None):
    from galscale.registry import CONFIG_FILE, WEIGHTS_FILE

    folder.mkdir(parents=True)
    (folder / WEIGHTS_FILE).write_bytes(weights)
    config = {"name": "evil", "builder": builder, "architecture": architecture or {},
              "sha256": hashlib.sha256(weights).hexdigest()}  # a consistent hash: no help
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    return folder


def test_malicious_model_files_are_refused_without_running_code(tmp_path):
    import torch
    from safetensors.torch import save

    from galscale.registry import ArtifactError, load_artifact, load_model

    marker = tmp_path / "payload-ran"
    pickled = pickle.dumps(_Payload(str(marker)))
    buf = io.BytesIO()
    torch.save({"weight": _Payload(str(marker))}, buf)  # a .pt file (zip + pickle)
    cases = {
        "pickle as model.safetensors": (pickled, "galscale.models.denoiser:build_denoiser"),
        "torch .pt as model.safetensors": (buf.getvalue(),
                                           "galscale.models.denoiser:build_denoiser"),
    }
    for name, (weights, builder) in cases.items():
        folder = _artefact(tmp_path / name.replace(" ", "_"), weights, builder)
        with pytest.raises(ArtifactError, match="not a valid safetensors file"):
            load_model(folder)
    # valid safetensors, but a builder outside galscale.models that would run a command
    good = save({"w": torch.zeros(1)})
    for builder in ("os:system", "subprocess:call", "builtins:exec"):
        folder = _artefact(tmp_path / builder.replace(":", "_"), good, builder,
                           {"command": f"touch {marker}"})
        assert load_artifact(folder).sha256  # the weights themselves are harmless
        with pytest.raises(ArtifactError, match="refused"):
            load_model(folder)
    assert not marker.exists(), "a model file executed code"


def _fits_band(path: Path, band: str, crval1: float = 53.1, shape=(96, 96)) -> Path:
    from astropy.io import fits

    rng = np.random.default_rng(len(band))
    header = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": 48.0,
                          "CRPIX2": 48.0, "CRVAL1": crval1, "CRVAL2": -27.8,
                          "CDELT1": -8.3e-6, "CDELT2": 8.3e-6, "CUNIT1": "deg",
                          "CUNIT2": "deg", "FILTER": band, "BUNIT": "nJy"})
    fits.PrimaryHDU(rng.normal(size=shape).astype(np.float32), header=header).writeto(path)
    return path


def test_truncated_fits_and_mismatched_wcs_are_refused_by_ingest(tmp_path, capsys):
    from galscale.cli import main

    a = _fits_band(tmp_path / "a_f200w.fits", "F200W")
    b = _fits_band(tmp_path / "b_f277w.fits", "F277W")
    truncated = tmp_path / "c_f356w.fits"
    full = _fits_band(tmp_path / "full_f356w.fits", "F356W").read_bytes()
    truncated.write_bytes(full[: len(full) // 2])  # header intact, half the pixels
    shifted = _fits_band(tmp_path / "d_f444w.fits", "F444W", crval1=53.2)  # 0.1 deg off
    reasons = []
    for files, message in (([a, b, truncated], "c_f356w.fits: truncated FITS file"),
                           ([a, b, shifted], "WCS differs")):
        out = tmp_path / f"survey-{len(message)}.zarr"
        assert main(["ingest", *map(str, files), "--out", str(out), "--chunk", "64"]) == 2
        err = capsys.readouterr().err
        assert message in err
        reasons.append(err.strip())
    assert main(["ingest", str(a), str(b), "--out", str(tmp_path / "ok.zarr"),
                 "--chunk", "64"]) == 0  # the same files without the bad one are fine
    with capsys.disabled():
        print("\n".join(reasons))


def test_band_missing_flags_every_row(field, tmp_path):
    from galscale.config import NIRCAM_BANDS
    from galscale.survey.extract import extract_tile
    from galscale.survey.sources import project_positions
    from galscale.survey.store import open_survey, write_survey
    from galscale.survey.tiling import tiles_for

    from .conftest import TILING

    full = open_survey(field.survey)
    bands = [b for b in NIRCAM_BANDS if b != "F090W"]
    sci = {b: full.read(b, 0, 384, 0, 384) for b in bands}
    err = {b: full.read(b, 0, 384, 0, 384, kind="err") for b in bands}
    url = str(tmp_path / "six-bands.zarr")
    write_survey(url, sci, err, full.wcs_header, pixel_scale_arcsec=full.pixel_scale_arcsec,
                 zeropoint_ab=full.zeropoint_ab["F200W"], chunk=128)
    survey = open_survey(url)
    truth = field.truth
    inside = (np.asarray(truth["x"]) < 380) & (np.asarray(truth["y"]) < 380)
    positions = project_positions(truth.filter(pa.array(inside)).select(["source_id", "ra",
                                                                         "dec"]), survey)
    rows = sum((extract_tile(survey, tile, positions=positions)["flag_reason"].tolist()
                for tile in tiles_for(survey.shape, TILING)), [])
    assert len(rows) == int(inside.sum()) > 0  # every input source has its row
    assert all("band_missing" in r and "F090W" in r for r in rows), rows[:3]


def test_spectra_without_flux_or_with_bad_redshifts_are_flagged():
    from galscale.spectra.preprocess import HARD_FLAGS, flag_reason, preprocess_spectra

    wave = np.linspace(0.6, 5.3, 400)
    good = 1.0 + 0.1 * np.sin(wave)
    spectra = {  # name: (flux, z, expected flag name)
        "good": (good, 3.0, ""),
        "all nan": (np.full_like(wave, np.nan), 3.0, "non_finite_input"),
        "all inf": (np.full_like(wave, np.inf), 3.0, "non_finite_input"),
        "zero flux": (np.zeros_like(wave), 3.0, "non_positive_continuum"),
        "negative z": (good, -0.5, "bad_redshift"),
        "absurd z": (good, 1e4, "bad_redshift"),
        "nan z": (good, np.nan, "bad_redshift"),
    }
    names = list(spectra)
    out = preprocess_spectra([wave] * len(names), [spectra[n][0] for n in names],
                             [np.full_like(wave, 0.1)] * len(names),
                             [spectra[n][1] for n in names])
    assert len(out.flags) == len(names)  # every spectrum keeps its row
    for name, flags in zip(names, out.flags, strict=True):
        expected = spectra[name][2]
        if expected:
            assert flags & HARD_FLAGS and expected in flag_reason(int(flags)), (name, flags)
        else:
            assert flags & HARD_FLAGS == 0 and np.isfinite(out.x[names.index(name)]).all()
