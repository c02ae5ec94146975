"""PSF aperture corrections: encircled energy, ingest of PSF images, corrected photometry."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from galscale.config import SimConfig
from galscale.sim.survey import simulate_survey, write_simulated_survey
from galscale.survey.psf import (
    PSF_ATTR,
    aperture_correction,
    encircled_energy,
    parse_psf_options,
)
from galscale.survey.sources import detect_sources
from galscale.survey.store import open_survey


def _gaussian(sigma: float, size: int = 65) -> np.ndarray:
    yy, xx = np.indices((size, size)) - size // 2
    return np.exp(-(xx**2 + yy**2) / (2 * sigma**2))


def test_encircled_energy_of_a_gaussian_is_analytic() -> None:
    curve = encircled_energy(_gaussian(3.0), pixel_scale_arcsec=0.03)
    r_px = np.asarray(curve["radius_arcsec"]) / 0.03
    expected = 1 - np.exp(-(r_px**2) / (2 * 3.0**2))
    wide = r_px > 1.0
    assert np.abs(np.asarray(curve["fraction"])[wide] - expected[wide]).max() < 0.01
    correction = aperture_correction(curve, np.array([3.0 * 0.03, 1.0]))
    assert correction[0] == pytest.approx(1 / (1 - np.exp(-0.5)), rel=0.02)
    assert correction[1] == 1.0  # beyond the curve: nothing missing
    with pytest.raises(ValueError, match="2-D"):
        encircled_energy(np.ones(5), 0.03)
    with pytest.raises(ValueError, match="BAND=FILE"):
        parse_psf_options(["F444W"])


def test_sim_point_sources_get_their_total_flux_back(tmp_path) -> None:
    """Kron apertures miss the PSF wings of point sources; the stored curves restore them."""
    paths = write_simulated_survey(
        simulate_survey(SimConfig(size=512, n_sources=70, seed=3,
                                  kind_fractions=(0.2, 0.2, 0.6, 0.0))), str(tmp_path))
    survey = open_survey(paths["survey"])
    assert set(survey.psf_encircled_energy) == set(survey.bands)
    truth = pq.read_table(paths["truth"]).to_pandas()
    stars = truth[(truth["kind"] == "star") & (truth["mag_F444W"] < 24)]
    block = survey.read_block(survey.bands, 0, survey.shape[0], 0, survey.shape[1])

    def star_ratios() -> np.ndarray:
        cat = detect_sources(survey, block)
        ratios = []
        for _, star in stars.iterrows():
            d = np.hypot(cat["x"] - star["x"], cat["y"] - star["y"])
            if d.min() < 1.0:
                ratios.append(cat["flux_F444W"][d.argmin()] / star["flux_F444W"])
        assert len(ratios) >= 5
        return np.asarray(ratios)

    corrected = np.median(star_ratios())
    survey.attrs = {k: v for k, v in survey.attrs.items() if k != PSF_ATTR}
    plain = np.median(star_ratios())
    print(f"F444W star flux / truth: corrected {corrected:.3f}, aperture only {plain:.3f}")
    assert plain < 0.95  # what the aperture alone misses at 4.4 um
    assert abs(corrected - 1.0) < 0.03


def test_ingest_stores_psf_curves_and_names_a_wrong_band(tmp_path) -> None:
    from galscale.cli import main
    from galscale.survey.synthetic import tan_header

    rng = np.random.default_rng(0)
    files = []
    for band in ("F200W", "F444W"):
        header = fits.Header(dict(tan_header((64, 64))))
        header["BUNIT"] = "nJy"
        path = tmp_path / f"mosaic_{band.lower()}.fits"
        fits.PrimaryHDU(rng.normal(0, 1, (64, 64)).astype(np.float32), header).writeto(path)
        files.append(str(path))
    psf = tmp_path / "psf_f444w.fits"
    hdu = fits.PrimaryHDU(_gaussian(2.0).astype(np.float32))
    hdu.header["PIXELSCL"] = 0.0315
    hdu.writeto(psf)
    out = tmp_path / "s.zarr"
    assert main(["ingest", *files, "--out", str(out), "--psf", f"F444W={psf}"]) == 0
    curves = open_survey(str(out)).psf_encircled_energy
    assert list(curves) == ["F444W"]
    assert curves["F444W"]["radius_arcsec"][0] == pytest.approx(0.25 * 0.0315)
    assert main(["ingest", *files, "--out", str(tmp_path / "t.zarr"),
                 "--psf", f"F090W={psf}"]) == 2
