"""`galscale classify-cutouts` on real FITS files cut from a simulated survey: ids kept from
the file names, the same probabilities as the survey models on the same pixels, missing bands
flagged, unreadable files flagged rather than fatal."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from astropy.io import fits

from galscale.cli import main
from galscale.config import NIRCAM_BANDS, SimConfig, SurveyJobConfig
from galscale.pipeline.cutout_files import classify_cutout_folder, discover_cutouts
from galscale.pipeline.inference import SurveyModels
from galscale.sim.survey import simulate_survey, write_simulated_survey
from galscale.survey.extract import extract_tile
from galscale.survey.store import open_survey
from galscale.survey.tiling import make_tiles


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    out = tmp_path_factory.mktemp("cutsim")
    paths = write_simulated_survey(simulate_survey(SimConfig(size=640, n_sources=12, seed=5)),
                                   str(out))
    survey = open_survey(paths["survey"])
    tile = make_tiles(survey.shape, 640, 128)[0]
    rows = extract_tile(survey, tile)
    x, y = rows["x"], rows["y"]
    inside = (x > 140) & (x < 500) & (y > 140) & (y < 500) & (rows["flags"] == 0)
    return survey, rows, np.flatnonzero(inside)[:3]


def _cut(survey, band, kind, x, y):
    px, py = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    return survey.read(band, py - 128, py + 128, px - 128, px + 128, kind=kind)


def test_cutout_files_give_the_survey_probabilities(field, tmp_path):
    survey, rows, chosen = field
    assert len(chosen) >= 2
    a, b = chosen[:2]
    folder = tmp_path / "cutouts"
    # source a: folder per source, one file per band with SCI + ERR extensions
    for band in NIRCAM_BANDS:
        (folder / f"src{a}").mkdir(parents=True, exist_ok=True)
        fits.HDUList([fits.PrimaryHDU(),
                      fits.ImageHDU(_cut(survey, band, "sci", rows["x"][a], rows["y"][a]), name="SCI"),
                      fits.ImageHDU(_cut(survey, band, "err", rows["x"][a], rows["y"][a]), name="ERR")]
                     ).writeto(folder / f"src{a}" / f"{band.lower()}.fits")
    # source b: one multi-band file, bands named by EXTNAME, F090W missing
    hdus = [fits.PrimaryHDU()]
    for band in NIRCAM_BANDS[1:]:
        hdus += [fits.ImageHDU(_cut(survey, band, "sci", rows["x"][b], rows["y"][b]), name=band),
                 fits.ImageHDU(_cut(survey, band, "err", rows["x"][b], rows["y"][b]),
                               name=f"ERR_{band}")]
    fits.HDUList(hdus).writeto(folder / f"gal-{b}.fits")
    # a flat per-band file that is not FITS at all
    (folder / "broken_f200w.fits").write_bytes(b"this is not a FITS file")

    assert set(discover_cutouts(folder)) == {f"src{a}", f"gal-{b}", "broken"}
    out = tmp_path / "catalog.parquet"
    assert main(["classify-cutouts", str(folder), "--out", str(out)]) == 0
    table = {r["source_id"]: r for r in pq.read_table(out).to_pylist()}

    expected = SurveyModels(SurveyJobConfig("", ""))({
        "source_id": np.arange(2), "flags": np.zeros(2, np.int64),
        "flag_reason": np.array(["", ""], dtype=object),
        "masked_fraction": rows["masked_fraction"][[a, b]],
        "morph_cutout": rows["morph_cutout"][[a, b]],
        "multiband_flux": rows["multiband_flux"][[a, b]],
        "multiband_err": rows["multiband_err"][[a, b]],
    })
    assert torch.is_grad_enabled(), "running the models in-process must not switch autograd off"
    got_a = table[f"src{a}"]
    assert got_a["flags"] == 0 and got_a["bands"] == ",".join(NIRCAM_BANDS)
    assert got_a["p_disk"] == pytest.approx(float(expected["p_disk"][0]), abs=1e-5)
    assert got_a["p_high_z"] == pytest.approx(float(expected["p_high_z"][0]), abs=1e-5)
    got_b = table[f"gal-{b}"]
    assert "band_missing: F090W" in got_b["flag_reason"]
    assert got_b["p_disk"] == pytest.approx(float(expected["p_disk"][1]), abs=1e-5)
    broken = table["broken"]
    assert broken["flags"] != 0 and "unreadable" in broken["flag_reason"]
    assert np.isnan(broken["p_disk"])


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no FITS cutouts"):
        classify_cutout_folder(tmp_path)
