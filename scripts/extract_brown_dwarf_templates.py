"""Extract a small set of BT-Settl model spectra from grizli's sdist into galscale/sim/data/.

Why: the simulator needs real substellar (and stellar) model spectra for brown-dwarf and star
colours, but must not download anything at run time. grizli (MIT licence, Gabe Brammer) ships
the BT-Settl grid `grizli/data/templates/stars/bt-settl_t400-3500_z0.0.fits` (213 models,
Teff 400-7000 K, solar metallicity, wavelength 0.01-5.12 um, F_lambda). This script keeps
log g = 5.0 models at a handful of temperatures, averages them onto a coarse logarithmic grid
(0.5-5.1 um, about 500 points) and writes `brown_dwarf_templates.npz` (a few tens of kB).

Usage (one-off; the result is committed):

    pip download grizli==1.14.3 --no-deps --no-binary :all: -d /tmp/grizli
    # (if pip refuses to prepare the sdist's metadata, fetch the same .tar.gz from PyPI)
    python scripts/extract_brown_dwarf_templates.py /tmp/grizli/grizli-1.14.3.tar.gz
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import numpy as np
from astropy.io import fits

MEMBER = "grizli/data/templates/stars/bt-settl_t400-3500_z0.0.fits"
LICENSE = "LICENSE.txt"
# Y/T/L dwarfs (brown dwarfs) and M/K/G/F dwarfs (ordinary stars), all at log g = 5.0.
BROWN_DWARF_TEFF = (400, 500, 600, 700, 800, 900, 1000, 1200, 1400, 1600, 1800, 2000)
STAR_TEFF = (2600, 3000, 3500, 4000, 5000, 6000, 7000)
LOGG = 5.0
WAVE_MIN_UM, WAVE_MAX_UM, N_WAVE = 0.5, 5.1, 500


def _read_member(tar: tarfile.TarFile, suffix: str) -> bytes:
    for m in tar.getmembers():
        if m.name.endswith(suffix):
            f = tar.extractfile(m)
            if f is not None:
                return f.read()
    raise FileNotFoundError(f"{suffix} not found in the sdist")


def _bin_average(wave: np.ndarray, flux: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean of F_lambda in each bin (trapezoid integral / bin width), on a fine interpolation."""
    fine = np.exp(np.linspace(np.log(edges[0]), np.log(edges[-1]), 40 * (len(edges) - 1) + 1))
    f = np.interp(fine, wave, flux)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(fine))])
    at_edges = np.interp(edges, fine, cum)
    return np.diff(at_edges) / np.diff(edges)


def _select(hdr: fits.Header, flux: np.ndarray, teffs: tuple[int, ...]) -> np.ndarray:
    n = flux.shape[1]
    grid = {(float(hdr[f"TEFF{i:03d}"]), float(hdr[f"LOGG{i:03d}"])): i for i in range(n)}
    rows = []
    for t in teffs:
        key = (float(t), LOGG)
        if key not in grid:
            raise KeyError(f"BT-Settl model Teff={t} logg={LOGG} not in the grid")
        rows.append(flux[:, grid[key]])
    return np.stack(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("sdist", help="path of grizli-<version>.tar.gz")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "galscale/sim/data"),
                    help="output folder")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.sdist) as tar:
        raw = _read_member(tar, MEMBER)
        licence = _read_member(tar, LICENSE).decode()
    with fits.open(io.BytesIO(raw)) as hdul:
        hdr = hdul[1].header
        wave_a = np.asarray(hdul[1].data["wave"], dtype=float)
        flux = np.asarray(hdul[1].data["flux"], dtype=float)
    edges_um = np.exp(np.linspace(np.log(WAVE_MIN_UM), np.log(WAVE_MAX_UM), N_WAVE + 1))
    centres_um = np.sqrt(edges_um[1:] * edges_um[:-1])
    edges_a = edges_um * 1e4

    def binned(teffs: tuple[int, ...]) -> np.ndarray:
        sel = _select(hdr, flux, teffs)
        rows = np.stack([_bin_average(wave_a, s, edges_a) for s in sel])
        return (rows / rows.max(axis=1, keepdims=True)).astype(np.float32)

    np.savez_compressed(
        out / "brown_dwarf_templates.npz",
        wave_um=centres_um.astype(np.float32),
        bd_teff=np.asarray(BROWN_DWARF_TEFF, dtype=np.float32),
        bd_flam=binned(BROWN_DWARF_TEFF),
        star_teff=np.asarray(STAR_TEFF, dtype=np.float32),
        star_flam=binned(STAR_TEFF),
        logg=np.float32(LOGG),
        source=np.array(f"grizli sdist {Path(args.sdist).name}: {MEMBER}"),
    )
    (out / "LICENSE-grizli.txt").write_text(
        "galscale/sim/data/brown_dwarf_templates.npz is derived from the BT-Settl model grid\n"
        f"file {MEMBER}\nshipped in the PyPI package grizli ({Path(args.sdist).name}),\n"
        "https://github.com/gbrammer/grizli, distributed under the MIT licence below.\n"
        "BT-Settl models: Allard, Homeier & Freytag (2012), Phil. Trans. R. Soc. A 370, 2765.\n\n"
        + licence
    )
    print(f"wrote {out / 'brown_dwarf_templates.npz'}")


if __name__ == "__main__":
    main()
