"""FITS mosaics -> galscale survey (Zarr v3), streaming block by block.

One FITS file per band: a JWST pipeline i2d product (`SCI`, `ERR`, `WHT` extensions) or a plain
image in the primary HDU. Pixels are read through `hdu.section` (memory-mapped for uncompressed
files) in chunk-aligned blocks, so mosaics larger than memory convert with O(chunk x width)
memory.

- Band: the `FILTER` keyword (primary or SCI header), else an `F<ddd>[W|M|N|W2]` token in the
  file name; a file giving neither, or two files with the same band, is an error naming them.
- Pixel grid: every file must have the shape and celestial WCS of the first (CRVAL, CRPIX,
  pixel matrix, CTYPE to 1e-9 relative); the error names the offending file and what differs.
- Error: `ERR` if present, else 1/sqrt(WHT) (JWST `WHT` is an inverse-variance map), else (plain
  images) a per-block robust estimate 1.4826 x MAD, recorded in attributes `error_source`.
  Zero-weight pixels (WHT == 0, ERR <= 0) get NaN error, so cutouts count them as masked.
- Units: `MJy/sr` (JWST) is converted to nJy per pixel using `PIXAR_SR` (or the WCS pixel area)
  so ingested surveys share the simulator's units and AB zero point 31.4; `Jy`, `mJy`, `uJy`,
  `nJy` (per pixel) are converted to nJy as well. Other units are kept as they are, with the zero
  point from `PHOTZP`/`MAGZERO`/`ZP` or the `zeropoint` argument (else an error).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from galscale.config import NJY_ZEROPOINT_AB
from galscale.survey.psf import PSF_ATTR, curves_from_psf_files
from galscale.survey.store import SurveyFormatError, SurveyWriter, open_survey

_BAND_RE = re.compile(r"(?<![A-Z0-9])(F\d{3}(?:W2|W|M|N))(?![A-Z0-9])", re.IGNORECASE)
_NJY_PER = {"njy": 1.0, "ujy": 1e3, "mjy": 1e6, "jy": 1e9}
_WCS_RTOL = 1e-9


class IngestError(ValueError):
    """A FITS input cannot be ingested; the message names the file."""


@dataclass
class BandFile:
    """What ingest needs to know about one input file."""

    path: str
    band: str
    shape: tuple[int, int]
    sci_ext: int | str
    err_ext: int | str | None
    wht_ext: int | str | None
    scale: float  # multiply pixels by this to get the stored unit
    bunit: str  # stored unit
    zeropoint: float
    header: Any  # astropy Header holding the WCS


def band_of(path: str, headers: Sequence[Mapping[str, Any]]) -> str:
    """Band from FILTER keyword, else from the file name."""
    for h in headers:
        f = str(h.get("FILTER", "") or "").strip().upper()
        if f and f not in ("CLEAR", "N/A"):
            m = _BAND_RE.search(f)
            return m.group(1).upper() if m else f
    m = _BAND_RE.search(os.path.basename(path).upper())
    if m:
        return m.group(1).upper()
    raise IngestError(f"{path}: no FILTER keyword and no band (e.g. F200W) in the file name")


def _pixel_area_sr(header: Any) -> float:
    from astropy.wcs import WCS

    if "PIXAR_SR" in header:
        return float(header["PIXAR_SR"])
    scales = WCS(header).celestial.proj_plane_pixel_scales()
    return float(np.prod([s.to_value("rad") for s in scales]))


def _check_complete(path: str, hdul: Any, extensions: Sequence[int | str]) -> None:
    """Raise IngestError if the file ends before the data of `extensions` (a truncated copy
    would otherwise fail half-way through the ingest, or not at all with memory mapping)."""
    size = os.path.getsize(path)
    for ext in extensions:
        index = hdul.index_of(ext)
        hdr = hdul[index].header
        n = math.prod(int(hdr.get(f"NAXIS{i}", 0)) for i in range(1, int(hdr.get("NAXIS", 0)) + 1))
        end = hdul.fileinfo(index)["datLoc"] + n * abs(int(hdr.get("BITPIX", 8))) // 8
        if end > size:
            raise IngestError(f"{path}: truncated FITS file: {size} bytes, but HDU {ext!r} "
                              f"data ends at byte {end}")


def inspect_file(path: str, zeropoint: float | None = None, convert_units: bool = True) -> BandFile:
    """Read the headers of one input and decide band, extensions, unit and zero point."""
    from astropy.io import fits

    if not os.path.exists(path):
        raise IngestError(f"{path}: no such file")
    try:
        with fits.open(path, memmap=True) as hdul:
            names = [h.name.upper() for h in hdul]
            if "SCI" in names:
                sci_ext: int | str = "SCI"
                err_ext = "ERR" if "ERR" in names else None
                wht_ext = "WHT" if "WHT" in names else None
            else:
                sci_ext, err_ext, wht_ext = 0, None, None
            hdr = hdul[sci_ext].header.copy()
            prim = hdul[0].header.copy()
            if hdr.get("NAXIS", 0) != 2:
                raise IngestError(f"{path}: science HDU is not a 2-D image (NAXIS={hdr.get('NAXIS')})")
            shape = (int(hdr["NAXIS2"]), int(hdr["NAXIS1"]))
            for ext in (err_ext, wht_ext):
                if ext is not None and hdul[ext].data is not None and hdul[ext].shape != shape:
                    raise IngestError(f"{path}: {ext} shape {hdul[ext].shape} != SCI {shape}")
            _check_complete(path, hdul, [e for e in (sci_ext, err_ext, wht_ext) if e is not None])
    except OSError as exc:
        raise IngestError(f"{path}: not a readable FITS file ({exc})") from exc
    band = band_of(path, [prim, hdr])
    unit = str(hdr.get("BUNIT", prim.get("BUNIT", "")) or "").strip()
    key = unit.lower().replace(" ", "").replace("/pixel", "").replace("/pix", "")
    if convert_units and key in ("mjy/sr", "mjy/steradian") and unit.startswith("M"):
        scale, bunit, zp = 1e15 * _pixel_area_sr(hdr), "nJy", NJY_ZEROPOINT_AB
    elif convert_units and key in _NJY_PER:
        scale, bunit, zp = _NJY_PER[key], "nJy", NJY_ZEROPOINT_AB
    else:
        scale, bunit = 1.0, unit or "unknown"
        zp_hdr = next((hdr.get(k, prim.get(k)) for k in ("PHOTZP", "MAGZERO", "ZP")
                       if k in hdr or k in prim), None)
        if unit in ("MJy/sr",) and zeropoint is None:  # keep MJy/sr: AB zp from pixel area
            zp_hdr = -2.5 * math.log10(1e6 * _pixel_area_sr(hdr)) + 8.90
        zp = zeropoint if zeropoint is not None else zp_hdr
        if zp is None:
            raise IngestError(f"{path}: unit {unit!r} is not convertible to nJy and no zero "
                              "point (PHOTZP/MAGZERO/ZP keyword or --zeropoint) was given")
    return BandFile(path, band, shape, sci_ext, err_ext, wht_ext, float(scale), bunit,
                    float(zp), hdr)


def check_same_grid(files: Sequence[BandFile]) -> None:
    """Raise IngestError naming the first file whose shape or WCS differs from the first's."""
    from astropy.wcs import WCS

    ref = files[0]
    rw = WCS(ref.header).celestial
    for f in files[1:]:
        if f.shape != ref.shape:
            raise IngestError(f"{f.path}: pixel grid {f.shape} differs from {ref.path} "
                              f"{ref.shape}; all bands must share one pixel grid")
        w = WCS(f.header).celestial
        checks = {
            "CTYPE": list(w.wcs.ctype) == list(rw.wcs.ctype),
            "CRVAL": np.allclose(w.wcs.crval, rw.wcs.crval, rtol=_WCS_RTOL, atol=0),
            "CRPIX": np.allclose(w.wcs.crpix, rw.wcs.crpix, rtol=_WCS_RTOL, atol=1e-6),
            "pixel matrix": np.allclose(w.pixel_scale_matrix, rw.pixel_scale_matrix,
                                        rtol=_WCS_RTOL, atol=0),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise IngestError(f"{f.path}: WCS differs from {ref.path} in {', '.join(bad)}; "
                              "all bands must share one pixel grid")


def _wcs_header(header: Any) -> Any:
    from astropy.wcs import WCS

    return WCS(header).celestial.to_header(relax=True)


def ingest_fits(files: Sequence[str], dest: str, *, chunk: int = 1024, name: str = "",
                zeropoint: float | None = None, convert_units: bool = True,
                storage_options: Mapping[str, Any] | None = None,
                block_cols: int | None = None, psf_files: Mapping[str, str] | None = None) -> str:
    """Convert FITS mosaics (one per band) into a survey at `dest`; returns `dest`.

    Reads `chunk` rows x `block_cols` columns (default 8 chunks) at a time. `psf_files`
    ({band: PSF FITS image}) stores those bands' encircled-energy curves, so that photometry
    applies aperture corrections (`galscale.survey.psf`).
    """
    from astropy.io import fits

    if not files:
        raise IngestError("no input files")
    infos = [inspect_file(p, zeropoint, convert_units) for p in files]
    seen: dict[str, str] = {}
    for f in infos:
        if f.band in seen:
            raise IngestError(f"{f.path}: band {f.band} already given by {seen[f.band]}")
        seen[f.band] = f.path
    check_same_grid(infos)
    ny, nx = infos[0].shape
    wcs_hdr = _wcs_header(infos[0].header)
    from astropy.wcs import WCS

    pix = WCS(wcs_hdr).proj_plane_pixel_scales()
    scale = float(np.sqrt(pix[0].to_value("arcsec") * pix[1].to_value("arcsec")))
    error_source = {f.band: ("ERR" if f.err_ext else "1/sqrt(WHT)" if f.wht_ext
                             else "robust MAD per block") for f in infos}
    unknown = sorted(set(psf_files or {}) - set(seen))
    if unknown:
        raise IngestError(f"--psf given for band(s) {unknown} that no input file has "
                          f"(bands: {sorted(seen)})")
    try:
        psf_curves = curves_from_psf_files(psf_files or {}, scale)
    except (OSError, ValueError) as exc:
        raise IngestError(f"PSF file: {exc}") from exc
    writer = SurveyWriter(
        dest, [f.band for f in infos], (ny, nx), wcs_hdr, pixel_scale_arcsec=scale,
        zeropoint_ab={f.band: f.zeropoint for f in infos}, bunit={f.band: f.bunit for f in infos},
        chunk=chunk, name=name, storage_options=storage_options,
        attrs={"source_files": {f.band: os.path.abspath(f.path) for f in infos},
               "error_source": error_source,
               **({PSF_ATTR: psf_curves} if psf_curves else {})},
    )
    bc = block_cols or 8 * chunk
    bc = max(chunk, (bc // chunk) * chunk)
    for f in infos:
        with fits.open(f.path, memmap=True) as hdul:
            sci_h = hdul[f.sci_ext]
            err_h = hdul[f.err_ext] if f.err_ext else None
            wht_h = hdul[f.wht_ext] if f.wht_ext else None
            for y0 in range(0, ny, chunk):
                y1 = min(ny, y0 + chunk)
                for x0 in range(0, nx, bc):
                    x1 = min(nx, x0 + bc)
                    sci = np.asarray(sci_h.section[y0:y1, x0:x1], dtype=np.float64)
                    if err_h is not None:
                        err = np.asarray(err_h.section[y0:y1, x0:x1], dtype=np.float64)
                    elif wht_h is not None:
                        w = np.asarray(wht_h.section[y0:y1, x0:x1], dtype=np.float64)
                        with np.errstate(divide="ignore", invalid="ignore"):
                            err = np.where(w > 0, 1.0 / np.sqrt(np.where(w > 0, w, 1.0)), np.nan)
                    else:
                        fin = sci[np.isfinite(sci)]
                        mad = (1.4826 * np.median(np.abs(fin - np.median(fin)))
                               if fin.size else np.nan)
                        err = np.full(sci.shape, mad if mad > 0 else np.nan)
                    if wht_h is not None and err_h is not None:
                        w = np.asarray(wht_h.section[y0:y1, x0:x1])
                        err = np.where(w > 0, err, np.nan)
                    err = np.where(np.isfinite(err) & (err > 0), err, np.nan)
                    writer.write(f.band, (sci * f.scale).astype(np.float32),
                                 (err * f.scale).astype(np.float32), y0, x0)
    return dest


def verify_survey(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Open a survey and summarise it (for `galscale survey-info`)."""
    s = open_survey(url, storage_options)
    ny, nx = s.shape
    ra, dec = s.wcs.pixel_to_world_values([0, nx - 1, 0, nx - 1], [0, 0, ny - 1, ny - 1])
    return {"url": url, "name": s.name, "bands": s.bands, "shape": [ny, nx], "chunk": s.chunk,
            "pixel_scale_arcsec": s.pixel_scale_arcsec, "bunit": s.bunit,
            "zeropoint_ab": s.zeropoint_ab,
            "corners_radec": [[float(a), float(d)] for a, d in zip(ra, dec, strict=True)]}


__all__ = ["IngestError", "BandFile", "band_of", "inspect_file", "check_same_grid",
           "ingest_fits", "verify_survey", "SurveyFormatError"]
