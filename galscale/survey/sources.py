"""Sources of one tile: SEP detection on an inverse-variance stack, or a given RA/Dec catalog.

Both modes work on a tile's in-memory `SurveyBlock` (outer bounds, margin included) and return
only the sources the tile owns (`galscale.survey.tiling`), as a dict of NumPy columns in survey
pixel coordinates (0-based, pixel centres at integers, the SEP and astropy convention).

Detection assumes background-subtracted mosaics (JWST i2d products after sky matching, and
`galscale.sim` surveys, are). The only background estimated is a local one of the detection
image (`local_background`), on bins aligned to the survey's pixel grid, so that every
measurement is a function of the pixels near the source only and is identical whichever tiling
is used; it shapes the segmentation only, never the fluxes.

`source_id` (int64) = (py * nx + px) * 8 + k, where (px, py) is the centroid's nearest pixel
(the pixel that decides tile ownership), nx the survey width, and k the rank (0..7, by
descending detection flux) among sources sharing that pixel. It depends only on the survey and
the source, never on the tiling. In catalog mode an integer input `id` column is kept as
`input_id`, and source_id follows the same rule (k by input row order).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sep

from galscale.config import NIRCAM_BANDS, DetectionConfig
from galscale.survey.flags import Flag, add_flag, join_reasons
from galscale.survey.psf import aperture_correction
from galscale.survey.store import Survey, SurveyBlock
from galscale.survey.tiling import Tile, owner_pixel

KRON_FACTOR = 2.5  # AUTO aperture = KRON_FACTOR x Kron radius (SExtractor's MAG_AUTO)
MIN_APERTURE_PX = 3.5  # minimum AUTO / catalog-mode aperture radius in pixels
IDS_PER_PIXEL = 8
MIN_WINDOW_SIGMA_PX = 0.5  # smallest windowed-centroid Gaussian sigma (SEP winpos' minsig)
BACKGROUND_BIN_PX = 8  # local background: median of survey-aligned bins of this side


def detection_image(block: SurveyBlock, bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray,
                                                                       np.ndarray]:
    """Inverse-variance-weighted stack of `bands`: (image, 1-sigma error, no-data mask)."""
    num = np.zeros(block.shape, np.float64)
    wsum = np.zeros(block.shape, np.float64)
    for b in bands:
        sci, err = block.band(b)
        ok = np.isfinite(sci) & np.isfinite(err) & (err > 0)
        w = np.where(ok, 1.0 / np.where(ok, err, 1.0) ** 2, 0.0)
        num += np.where(ok, sci, 0.0) * w
        wsum += w
    mask = wsum <= 0
    image = np.where(mask, 0.0, num / np.where(mask, 1.0, wsum))
    err = np.where(mask, np.inf, 1.0 / np.sqrt(np.where(mask, 1.0, wsum)))
    return image, err, mask


def _sep_ready(image: np.ndarray, err: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    fill = float(np.median(err[~mask])) if (~mask).any() else 1.0
    return (np.ascontiguousarray(image, np.float64),
            np.ascontiguousarray(np.where(mask, fill, err), np.float64))


def local_background(image: np.ndarray, mask: np.ndarray, y0: int, x0: int,
                     box_px: int) -> np.ndarray:
    """Smooth local background of a detection image whose pixel [0, 0] is survey pixel (y0, x0).

    Medians of BACKGROUND_BIN_PX-square bins aligned to the survey grid (not to the block),
    median-filtered over about `box_px`, bilinearly interpolated back to pixels. Away from the
    block edge (a few box widths; tile margins are wider) the result depends only on the survey
    pixels, not on where the tile starts. Bins without data take the median of the others.
    """
    from scipy.ndimage import map_coordinates, median_filter

    f = BACKGROUND_BIN_PX
    oy, ox = (-y0) % f, (-x0) % f
    ny, nx = (image.shape[0] - oy) // f, (image.shape[1] - ox) // f
    if ny < 1 or nx < 1:
        return np.zeros_like(image)
    sub = np.where(mask, np.nan, image)[oy:oy + ny * f, ox:ox + nx * f]
    with warnings.catch_warnings():  # all-NaN bins (no data) are filled below
        warnings.simplefilter("ignore", RuntimeWarning)
        bins = np.nanmedian(sub.reshape(ny, f, nx, f).transpose(0, 2, 1, 3).reshape(ny, nx, -1),
                            axis=2)
    bins = np.where(np.isfinite(bins), bins, np.nanmedian(bins) if np.isfinite(bins).any() else 0.0)
    n = max(1, int(round(box_px / f)))
    coarse = median_filter(bins, size=n | 1, mode="nearest")
    gy = (np.arange(image.shape[0]) - oy - (f - 1) / 2) / f
    gx = (np.arange(image.shape[1]) - ox - (f - 1) / 2) / f
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    return map_coordinates(coarse, [yy, xx], order=1, mode="nearest")


def segment_half_light_radius(data: np.ndarray, x: np.ndarray, y: np.ndarray,
                              segmap: np.ndarray, seg_id: np.ndarray, mask: np.ndarray,
                              max_radius_px: int = 32) -> np.ndarray:
    """Half-light radius (pixels) of each object's own segment about (x, y): the light of
    blended neighbours and of the noise outside the segment does not widen it."""
    ny, nx = data.shape
    out = np.ones(len(x))
    for i in range(len(x)):
        h = max_radius_px
        cx, cy = int(round(x[i])), int(round(y[i]))
        xa, xb, ya, yb = max(cx - h, 0), min(cx + h + 1, nx), max(cy - h, 0), min(cy + h + 1, ny)
        own = (segmap[ya:yb, xa:xb] == seg_id[i]) & ~mask[ya:yb, xa:xb]
        light = np.where(own, np.clip(data[ya:yb, xa:xb], 0.0, None), 0.0).ravel()
        gy, gx = np.mgrid[ya:yb, xa:xb]
        r = np.hypot(gx - x[i], gy - y[i]).ravel()
        order = np.argsort(r, kind="stable")
        cum = np.cumsum(light[order])
        if cum[-1] > 0:
            out[i] = float(r[order][np.searchsorted(cum, 0.5 * cum[-1])])
    return out


def gaussian_kernel(fwhm_px: float) -> np.ndarray | None:
    """Normalised circular Gaussian of FWHM `fwhm_px` on an odd grid of +-3 sigma (at least
    3x3), SEP's matched-filter kernel; None for fwhm_px <= 0 (SEP's default 3x3 kernel)."""
    if not fwhm_px > 0:
        return None
    sigma = fwhm_px / 2.3548
    h = max(1, int(np.ceil(3.0 * sigma)))
    r = np.arange(-h, h + 1, dtype=np.float64)
    k = np.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / sigma**2)
    return k / k.sum()


def windowed_centroids(data: np.ndarray, x: np.ndarray, y: np.ndarray, sig: np.ndarray,
                       mask: np.ndarray, segmap: np.ndarray, seg_id: np.ndarray,
                       max_iter: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windowed (SExtractor XWIN) centroids that ignore the pixels of other detected objects.

    From (x, y), iterate the Gaussian-weighted (sigma `sig`) first moment of `data` over the
    pixels in the object's own segment or in no segment, and not in `mask`, to its fixed point.
    SEP's `winpos` uses every pixel, so a bright blended neighbour pulls the centroid of a
    faint source towards itself by pixels. Returns (x, y, ok); ok is False where the weighted
    flux is not positive or the iteration did not converge.
    """
    ny, nx = data.shape
    xo, yo, ok = x.astype(np.float64).copy(), y.astype(np.float64).copy(), np.zeros(len(x), bool)
    for i in range(len(x)):
        h = int(np.ceil(4.0 * sig[i])) + 1
        cx, cy = int(round(x[i])), int(round(y[i]))
        xa, xb, ya, yb = max(cx - h, 0), min(cx + h + 1, nx), max(cy - h, 0), min(cy + h + 1, ny)
        seg = segmap[ya:yb, xa:xb]
        use = ((seg == 0) | (seg == seg_id[i])) & ~mask[ya:yb, xa:xb]
        im = np.where(use, data[ya:yb, xa:xb], 0.0)
        gy, gx = np.mgrid[ya:yb, xa:xb]
        px, py = float(x[i]), float(y[i])
        for _ in range(max_iter):
            w = im * np.exp(-0.5 * ((gx - px) ** 2 + (gy - py) ** 2) / sig[i] ** 2)
            tot = w.sum()
            if not tot > 0:
                break
            nxp, nyp = (w * gx).sum() / tot, (w * gy).sum() / tot
            step = abs(nxp - px) + abs(nyp - py)
            px, py = nxp, nyp
            if step < 1e-4:
                xo[i], yo[i], ok[i] = px, py, True
                break
    return xo, yo, ok


def source_ids(px: np.ndarray, py: np.ndarray, nx: int, order_key: np.ndarray) -> np.ndarray:
    """Survey-unique int64 ids from owner pixels; `order_key` ranks sources sharing a pixel."""
    base = py.astype(np.int64) * int(nx) + px.astype(np.int64)
    ids = base * IDS_PER_PIXEL
    order = np.lexsort((order_key, base))
    rank = np.zeros(len(base), np.int64)
    for j in range(1, len(order)):
        if base[order[j]] == base[order[j - 1]]:
            rank[order[j]] = rank[order[j - 1]] + 1
    if (rank >= IDS_PER_PIXEL).any():
        raise ValueError(f"more than {IDS_PER_PIXEL} sources share one pixel")
    return ids + rank


def photometry(block: SurveyBlock, x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray,
               theta: np.ndarray, r: np.ndarray, bands: Sequence[str],
               zeropoint_ab: Mapping[str, float], segmap: np.ndarray | None = None,
               seg_id: np.ndarray | None = None,
               psf_curves: Mapping[str, Mapping[str, list[float]]] | None = None,
               pixel_scale_arcsec: float = 0.0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Elliptical-aperture flux, error and AB mag per band at local block positions.

    Apertures with r <= 0 are circles of radius MIN_APERTURE_PX. With a detection `segmap`
    (int32, block-sized) and each source's `seg_id`, pixels of other detected objects are left
    out of the sums, so a blended neighbour's light does not enter the flux. Bands with a PSF
    encircled-energy curve in `psf_curves` get the point-source aperture correction
    (`galscale.survey.psf`). Bands not in the block give NaN. Returns (columns, truncated mask).
    """
    psf_curves = psf_curves or {}
    # circular-equivalent aperture radius (pixels) for the aperture corrections
    r_eq = np.where(r <= 0, MIN_APERTURE_PX, r * np.sqrt(np.abs(a * b)))
    seg_kw: dict[str, Any] = {}
    cols: dict[str, np.ndarray] = {}
    n = len(x)
    trunc = np.zeros(n, bool)
    circ = r <= 0
    for band in bands:
        flux = np.full(n, np.nan)
        ferr = np.full(n, np.nan)
        if band in block.bands and n:
            sci, err = block.band(band)
            bad = ~(np.isfinite(sci) & np.isfinite(err))
            data = np.ascontiguousarray(np.where(bad, 0.0, sci), np.float64)
            e = np.ascontiguousarray(np.where(bad, 0.0, err), np.float64)
            fe = np.zeros(n)
            fl = np.zeros(n)
            flg = np.zeros(n, np.int64)
            if (~circ).any():
                i = ~circ
                if segmap is not None:
                    seg_kw = {"segmap": segmap, "seg_id": seg_id[i]}
                fl[i], fe[i], flg[i] = sep.sum_ellipse(data, x[i], y[i], a[i], b[i], theta[i],
                                                       r[i], err=e, mask=bad, subpix=5,
                                                       **seg_kw)
            if circ.any():
                if segmap is not None:
                    seg_kw = {"segmap": segmap, "seg_id": seg_id[circ]}
                fl[circ], fe[circ], flg[circ] = sep.sum_circle(data, x[circ], y[circ],
                                                               MIN_APERTURE_PX, err=e, mask=bad,
                                                               subpix=5, **seg_kw)
            flux, ferr = fl, fe
            if band in psf_curves:
                correction = aperture_correction(psf_curves[band], r_eq * pixel_scale_arcsec)
                flux, ferr = flux * correction, ferr * correction
            if segmap is None:
                trunc |= (flg & (sep.APER_TRUNC | sep.APER_HASMASKED)) != 0
            else:  # segmap pixels set APER_HASMASKED too: count only no-data pixels here
                nbad, _, _ = sep.sum_ellipse(bad.astype(np.float64), x, y,
                                             np.where(circ, 1.0, a), np.where(circ, 1.0, b),
                                             np.where(circ, 0.0, theta),
                                             np.where(circ, MIN_APERTURE_PX, r), subpix=1)
                trunc |= ((flg & sep.APER_TRUNC) != 0) | (nbad > 0)
            allmasked = (flg & sep.APER_ALLMASKED) != 0
            flux[allmasked] = np.nan
            ferr[allmasked] = np.nan
        cols[f"flux_{band}"] = flux
        cols[f"flux_err_{band}"] = ferr
        with np.errstate(divide="ignore", invalid="ignore"):
            cols[f"mag_{band}"] = np.where(flux > 0, zeropoint_ab.get(band, np.nan)
                                           - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)),
                                           np.nan)
    return cols, trunc


def _finish(survey: Survey, block: SurveyBlock, tile: Tile | None, x: np.ndarray, y: np.ndarray,
            cols: dict[str, Any], flags: np.ndarray, reasons: list[list[str]],
            bands: Sequence[str]) -> dict[str, np.ndarray]:
    missing = [b for b in bands if b not in block.bands]
    if missing and len(x):
        add_flag(flags, reasons, slice(None), Flag.BAND_MISSING, ",".join(missing))
    ra, dec = (survey.wcs.pixel_to_world_values(x, y) if len(x) else (np.zeros(0), np.zeros(0)))
    out = {
        "source_id": cols.pop("source_id").astype(np.int64),
        "tile_id": np.array([tile.tile_id if tile else ""] * len(x), dtype=object),
        "ra": np.asarray(ra, np.float64), "dec": np.asarray(dec, np.float64),
        "x": x.astype(np.float64), "y": y.astype(np.float64),
    }
    out.update(cols)
    out["flags"] = flags.astype(np.int64)
    out["flag_reason"] = join_reasons(reasons)
    return out


def detect_sources(survey: Survey, block: SurveyBlock, tile: Tile | None = None,
                   config: DetectionConfig | None = None,
                   bands: Sequence[str] = NIRCAM_BANDS) -> dict[str, np.ndarray]:
    """Detect, deblend and measure the sources `tile` owns (all sources when tile is None).

    Detection: SEP on the inverse-variance stack of `config.bands` present in the block (a
    missing detection band is skipped; none present raises ValueError). Centroids: windowed
    (SEP winpos). Fluxes per band in `bands`: AUTO (Kron) ellipse of the stack's shape.
    Returns columns source_id, tile_id, ra, dec, x, y, flux_/flux_err_/mag_<BAND>,
    flux_radius, snr, flags, flag_reason.
    """
    config = config or DetectionConfig()
    det_bands = [b for b in config.bands if b in block.bands]
    if not det_bands:
        raise ValueError(f"none of the detection bands {list(config.bands)} is in the survey "
                         f"(it has {survey.bands})")
    image, err, mask = detection_image(block, det_bands)
    data, e = _sep_ready(image, err, mask)
    sep.set_extract_pixstack(max(sep.get_extract_pixstack(), 3 * data.size))
    sep.set_sub_object_limit(max(sep.get_sub_object_limit(), 4096))
    kernel = gaussian_kernel(config.filter_fwhm_arcsec / survey.pixel_scale_arcsec)
    kw: dict[str, Any] = {} if kernel is None else {"filter_kernel": kernel}
    extract_data = data
    if config.background_box_px > 0:
        extract_data = np.ascontiguousarray(
            data - local_background(data, mask, block.y0, block.x0, config.background_box_px))
    objs, segmap = sep.extract(extract_data, config.threshold_sigma, err=e, mask=mask,
                               minarea=config.min_area, deblend_nthresh=config.deblend_nthresh,
                               deblend_cont=config.deblend_cont, clean=config.clean,
                               clean_param=config.clean_param, filter_type="matched",
                               segmentation_map=True, **kw)
    segmap = np.ascontiguousarray(segmap, np.int32)
    seg_id = np.arange(1, len(objs) + 1, dtype=np.int32)
    xs, ys = objs["x"].astype(np.float64), objs["y"].astype(np.float64)
    a, b, th = objs["a"].astype(np.float64), objs["b"].astype(np.float64), objs["theta"]
    th = np.clip(th.astype(np.float64), -np.pi / 2, np.pi / 2)
    ok = np.isfinite(xs) & np.isfinite(ys) & (a > 0) & (b > 0)
    xs, ys, a, b, th, oflag, seg_id = (xs[ok], ys[ok], a[ok], b[ok], th[ok], objs["flag"][ok],
                                       seg_id[ok])
    # windowed centroid: sigma = 2 * r_half / 2.35 (SExtractor's XWIN convention), with r_half
    # the half-light radius of the object's own segment: isophotal moments (sqrt(a b)) of a
    # compact source blended with a faint neighbour or noise, or a circle taking in the light
    # of neighbours, widen the window and let noise and neighbours pull the centroid
    r_half = segment_half_light_radius(data, xs, ys, segmap, seg_id, mask)
    sig = np.maximum(2.0 * r_half / 2.35, MIN_WINDOW_SIGMA_PX)
    xw, yw, wok = windowed_centroids(data, xs, ys, sig, mask, segmap, seg_id)
    # a converged window may move from the isophotal centroid of a blend by up to 2 sigma
    moved = np.hypot(xw - xs, yw - ys)
    good = wok & np.isfinite(xw) & np.isfinite(yw) & (moved < np.maximum(2.0, 2.0 * sig))
    xw, yw = np.where(good, xw, xs), np.where(good, yw, ys)
    sx, sy = xw + block.x0, yw + block.y0
    keep = tile.owns(sx, sy, survey.shape) if tile is not None else np.ones(len(sx), bool)
    xw, yw, sx, sy, a, b, th, oflag, seg_id = (v[keep] for v in (xw, yw, sx, sy, a, b, th,
                                                                 oflag, seg_id))
    n = len(sx)
    kr, _ = sep.kron_radius(data, xw, yw, a, b, th, 6.0, mask=mask, segmap=segmap,
                            seg_id=seg_id) if n else (np.zeros(0), 0)
    r = KRON_FACTOR * np.where(np.isfinite(kr), kr, 0.0)
    r = np.where(r * np.sqrt(a * b) < MIN_APERTURE_PX, 0.0, r)
    stack_block = SurveyBlock(bands=["_stack"], y0=block.y0, x0=block.x0,
                              sci=image[None].astype(np.float32),
                              err=np.where(mask, np.nan, err)[None].astype(np.float32))
    sc, _ = photometry(stack_block, xw, yw, a, b, th, r, ["_stack"], {}, segmap, seg_id)
    cols, trunc = photometry(block, xw, yw, a, b, th, r, bands, survey.zeropoint_ab, segmap,
                             seg_id, survey.psf_encircled_energy, survey.pixel_scale_arcsec)
    fr, _ = sep.flux_radius(data, xw, yw, 6.0 * a, 0.5, normflux=sc["flux__stack"], mask=mask,
                            subpix=5) if n else (np.zeros(0), None)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = sc["flux__stack"] / sc["flux_err__stack"]
    flags = np.zeros(n, np.int64)
    reasons: list[list[str]] = [[] for _ in range(n)]
    add_flag(flags, reasons, (oflag & sep.OBJ_MERGED) != 0, Flag.BLENDED)
    add_flag(flags, reasons, ((oflag & sep.OBJ_TRUNC) != 0) | trunc, Flag.TRUNCATED)
    add_flag(flags, reasons, ~(snr >= 5), Flag.LOW_SNR)
    px, py = owner_pixel(sx, sy, survey.shape)
    cols["source_id"] = source_ids(px, py, survey.shape[1], -sc["flux__stack"])
    cols["flux_radius"] = np.asarray(fr, np.float64)
    cols["snr"] = snr
    return _finish(survey, block, tile, sx, sy, cols, flags, reasons, bands)


# ---------------------------------------------------------------------------------------------
# catalog-driven mode


def read_position_table(path: str, storage_options: Mapping[str, Any] | None = None):
    """Read a Parquet, FITS or CSV table (by extension) into a pyarrow Table."""
    import fsspec
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    low = path.lower()
    with fsspec.open(path, "rb", **dict(storage_options or {})) as f:
        if low.endswith((".parquet", ".pq")):
            return pq.read_table(f)
        if low.endswith(".csv"):
            return pcsv.read_csv(f)
        if low.endswith((".fits", ".fit", ".fits.gz")):
            from astropy.table import Table

            t = Table.read(f, format="fits")
            return pa.table({c: np.asarray(t[c]) for c in t.colnames})
    raise ValueError(f"catalog {path}: unknown format (use .parquet, .csv or .fits)")


def project_positions(table: Any, survey: Survey) -> dict[str, np.ndarray]:
    """RA/Dec catalog (pyarrow/astropy/pandas table or dict) -> survey pixel positions.

    Columns `ra`, `dec` (degrees, any case) are required; an integer `id`/`source_id` column is
    kept as `input_id`. Positions outside the pixel grid, or not projectable, are flagged
    OFF_SURVEY with the reason; they are kept (owned by the nearest edge tile / the first tile).
    """
    names = list(table.column_names if hasattr(table, "column_names") else
                 table.colnames if hasattr(table, "colnames") else table.keys())
    lower = {n.lower(): n for n in names}
    if "ra" not in lower or "dec" not in lower:
        raise ValueError(f"position catalog needs 'ra' and 'dec' columns, has {names}")

    def col(n: str) -> np.ndarray:
        c = table[lower[n]]
        return np.asarray(c.to_numpy() if hasattr(c, "to_numpy") else c)

    ra, dec = col("ra").astype(np.float64), col("dec").astype(np.float64)
    idn = next((n for n in ("id", "source_id", "input_id") if n in lower), None)
    input_id = col(idn).astype(np.int64) if idn else np.arange(len(ra), dtype=np.int64)
    with np.errstate(invalid="ignore"):
        x, y = survey.wcs.world_to_pixel_values(ra, dec)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ny, nx = survey.shape
    flags = np.zeros(len(ra), np.int64)
    reasons: list[list[str]] = [[] for _ in range(len(ra))]
    finite = np.isfinite(x) & np.isfinite(y)
    for i in np.flatnonzero(~finite):
        add_flag(flags, reasons, i, Flag.OFF_SURVEY, f"ra={ra[i]}, dec={dec[i]} not projectable")
    off = finite & ((x < -0.5) | (x >= nx - 0.5) | (y < -0.5) | (y >= ny - 0.5))
    for i in np.flatnonzero(off):
        add_flag(flags, reasons, i, Flag.OFF_SURVEY,
                 f"pixel ({x[i]:.1f}, {y[i]:.1f}) outside grid {nx}x{ny}")
    if idn:  # repeated input ids: every copy is kept and flagged, none silently merged
        uniq, counts = np.unique(input_id, return_counts=True)
        repeats = dict(zip(uniq[counts > 1].tolist(), counts[counts > 1].tolist(), strict=True))
        for i in np.flatnonzero(np.isin(input_id, list(repeats))):
            add_flag(flags, reasons, i, Flag.DUPLICATE_INPUT_ID,
                     f"input id {input_id[i]} appears {repeats[int(input_id[i])]} times")
    return {"ra": ra, "dec": dec, "x": x, "y": y, "input_id": input_id, "flags": flags,
            "reasons": np.array(reasons + [[]], dtype=object)[:-1]}


def stack_flux_radius(block: SurveyBlock, x: np.ndarray, y: np.ndarray,
                      bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(flux radius in pixels, S/N) on the detection stack at fixed local positions (x, y):
    the radius holding half of the light within 6 x MIN_APERTURE_PX, and the S/N in a circle
    of MIN_APERTURE_PX. `bands` are stacked as for detection (those absent from `block` are
    skipped)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    zeros = np.zeros(len(x))
    image, err, mask = detection_image(block, [b for b in bands if b in block.bands])
    stack = SurveyBlock(["_s"], block.y0, block.x0, image[None].astype(np.float32),
                        np.where(mask, np.nan, err)[None].astype(np.float32))
    sc, _ = photometry(stack, x, y, zeros, zeros, zeros, zeros, ["_s"], {})
    data, _ = _sep_ready(image, err, mask)
    # half of the light within 6 x MIN_APERTURE_PX (not of the small S/N aperture's light,
    # which would cap the radius at MIN_APERTURE_PX)
    fr, _ = sep.flux_radius(data, x, y, np.full(len(x), 6 * MIN_APERTURE_PX), 0.5,
                            mask=mask, subpix=5) if len(x) else (zeros, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = sc["flux__s"] / sc["flux_err__s"]
    return np.asarray(fr, np.float64), snr


def catalog_sources(survey: Survey, block: SurveyBlock, positions: Mapping[str, np.ndarray],
                    tile: Tile | None = None, config: DetectionConfig | None = None,
                    bands: Sequence[str] = NIRCAM_BANDS) -> dict[str, np.ndarray]:
    """Measure the `project_positions` sources that `tile` owns, at their given positions.

    Fluxes are in circles of radius MIN_APERTURE_PX; flux_radius and snr on the detection stack.
    Non-projectable positions are owned by tile r0000c0000 and get NaN measurements.
    """
    config = config or DetectionConfig()
    x, y = np.asarray(positions["x"]), np.asarray(positions["y"])
    finite = np.isfinite(x) & np.isfinite(y)
    xo, yo = np.where(finite, x, 0.0), np.where(finite, y, 0.0)
    keep = tile.owns(xo, yo, survey.shape) if tile is not None else np.ones(len(x), bool)
    idx = np.flatnonzero(keep)
    n = len(idx)
    sx, sy = x[idx], y[idx]
    flags = np.asarray(positions["flags"])[idx].copy()
    reasons = [list(r) for r in np.asarray(positions["reasons"], dtype=object)[idx]]
    lx, ly = sx - block.x0, sy - block.y0
    inside = (np.isfinite(lx) & (lx >= -0.5) & (lx < block.shape[1] - 0.5) & (ly >= -0.5)
              & (ly < block.shape[0] - 0.5))
    mx, my = np.where(inside, lx, 0.0), np.where(inside, ly, 0.0)
    zeros = np.zeros(n)
    cols, trunc = photometry(block, mx, my, zeros, zeros, zeros, zeros, bands,
                             survey.zeropoint_ab, psf_curves=survey.psf_encircled_energy,
                             pixel_scale_arcsec=survey.pixel_scale_arcsec)
    fr, snr = stack_flux_radius(block, mx, my, config.bands)
    for k in list(cols) + ["snr", "fr"]:
        if k in cols:
            cols[k] = np.where(inside, cols[k], np.nan)
    snr, fr = np.where(inside, snr, np.nan), np.where(inside, fr, np.nan)
    add_flag(flags, reasons, trunc & inside, Flag.TRUNCATED)
    px, py = owner_pixel(np.where(np.isfinite(sx), sx, 0), np.where(np.isfinite(sy), sy, 0),
                         survey.shape)
    cols["source_id"] = source_ids(px, py, survey.shape[1], idx.astype(np.float64))
    cols["input_id"] = np.asarray(positions["input_id"])[idx]
    cols["flux_radius"] = np.asarray(fr, np.float64)
    cols["snr"] = snr
    return _finish(survey, block, tile, sx, sy, cols, flags, reasons, bands)


__all__ = ["detection_image", "local_background", "segment_half_light_radius", "detect_sources",
           "photometry", "source_ids", "read_position_table", "project_positions",
           "stack_flux_radius", "catalog_sources", "KRON_FACTOR", "MIN_APERTURE_PX"]
