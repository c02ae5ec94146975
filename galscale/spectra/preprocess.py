"""Rest-frame preprocessing of prism spectra: the exact input the spectral VAE sees.

Steps (seed 003, section 2.2): de-redshift (lambda_rest = lambda_obs / (1 + z)), linearly
resample flux onto a common uniform rest-frame grid, mask grid points the observed spectrum
does not cover (or where a neighbouring pixel is bad), divide by the continuum at rest 1500 A
(median of valid flux in a window around it), and apply arcsinh, which is linear for the
continuum and logarithmic for strong emission lines.

Everything is vectorised over a batch: ragged observed spectra are padded into one rectangle
and resampled with a single `searchsorted`, so a Ray Data `map_batches` call on thousands of
spectra costs a few array operations. Spectra that cannot be normalised are never dropped: they
keep their row, get an all-False mask, and carry `flags` bits plus a readable `flag_reason`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# The paper's rest grid (learnspec, rest_wavelength_grid_z4_16.npy): 2,459 points, 3 A apart.
DEFAULT_GRID_START_A = 1075.5240683080701
DEFAULT_GRID_STEP_A = 3.0
DEFAULT_GRID_SIZE = 2459

# Flag bits of a preprocessed spectrum (also written to the spectral catalog's `flags`).
FLAG_BAD_REDSHIFT = 1  # redshift missing, non-finite, negative or above MAX_REDSHIFT
FLAG_NONFINITE = 2  # no finite flux/err pixel at all
FLAG_ALL_MASKED = 4  # the observed range does not overlap the rest grid
FLAG_NO_FLUX_AT_NORM = 8  # too few valid grid points around rest 1500 A
FLAG_NONPOSITIVE_NORM = 16  # continuum at rest 1500 A is <= 0 (cannot normalise)
FLAG_BAD_WAVELENGTH = 32  # observed wavelengths not increasing (or non-finite inside the range)
FLAG_NORM_FALLBACK = 64  # soft: normalised at the bluest covered continuum, not at rest 1500 A
# Set by the embedding, not by preprocessing: the VAE reconstructs the spectrum worse than the
# fitted model's recon_mse_max (noise / artifact dominated); it keeps its latent and map
# position but gets no cluster (-1). See galscale.spectra.fit.
FLAG_HIGH_RECON_ERROR = 128
# Hard flags make a row unusable (no embedding, cluster -1); soft flags are warnings.
HARD_FLAGS = (
    FLAG_BAD_REDSHIFT | FLAG_NONFINITE | FLAG_ALL_MASKED | FLAG_NO_FLUX_AT_NORM
    | FLAG_NONPOSITIVE_NORM | FLAG_BAD_WAVELENGTH
)
FLAG_NAMES: dict[int, str] = {
    FLAG_BAD_REDSHIFT: "bad_redshift",
    FLAG_NONFINITE: "non_finite_input",
    FLAG_ALL_MASKED: "all_masked",
    FLAG_NO_FLUX_AT_NORM: "no_valid_flux_near_norm_wavelength",
    FLAG_NONPOSITIVE_NORM: "non_positive_continuum_at_norm_wavelength",
    FLAG_BAD_WAVELENGTH: "wavelengths_not_increasing",
    FLAG_NORM_FALLBACK: "normalised_at_bluest_covered_continuum",
    FLAG_HIGH_RECON_ERROR: "reconstruction_error_above_model_threshold",
}
MAX_REDSHIFT = 30.0


def rest_grid(
    start: float = DEFAULT_GRID_START_A,
    step: float = DEFAULT_GRID_STEP_A,
    size: int = DEFAULT_GRID_SIZE,
) -> np.ndarray:
    """Uniform rest-frame wavelength grid in Angstrom (default: the paper's 1075.5-8449.5 A)."""
    if size < 2 or step <= 0:
        raise ValueError(f"rest grid needs size >= 2 and step > 0, got size={size}, step={step}")
    return start + step * np.arange(size, dtype=np.float64)


@dataclass(frozen=True)
class PreprocessConfig:
    """How spectra are put onto the VAE's input grid."""

    grid_start_a: float = DEFAULT_GRID_START_A
    grid_step_a: float = DEFAULT_GRID_STEP_A
    grid_size: int = DEFAULT_GRID_SIZE
    norm_wavelength_a: float = 1500.0
    norm_half_width_a: float = 50.0  # window for the continuum median: 1450-1550 A
    min_norm_points: int = 5  # valid grid points needed inside that window
    # When rest 1500 A is not covered, normalise by the median of the first `2 * half_width`
    # Angstrom of valid coverage instead (soft flag FLAG_NORM_FALLBACK). Off by default: the
    # paper requires 1500 A; useful for assigning partial spectra to existing clusters.
    norm_fallback: bool = False

    def grid(self) -> np.ndarray:
        return rest_grid(self.grid_start_a, self.grid_step_a, self.grid_size)


@dataclass
class PreprocessedSpectra:
    """VAE input for a batch: arcsinh(flux / continuum_1500) on the rest grid, and its mask."""

    x: np.ndarray  # float32 [N, D]; 0 where masked
    mask: np.ndarray  # bool [N, D]; True where the value is measured
    norm: np.ndarray  # float64 [N]; continuum at rest 1500 A in input flux units (NaN if flagged)
    flags: np.ndarray  # int32 [N]; bit mask of FLAG_*
    grid: np.ndarray = field(repr=False, default_factory=lambda: rest_grid())

    @property
    def flag_reason(self) -> np.ndarray:
        """Readable reasons per row ('' when the spectrum is fine)."""
        return np.array([flag_reason(int(f)) for f in self.flags], dtype=object)


def flag_reason(flags: int) -> str:
    """Comma-separated names of the set flag bits ('' when none)."""
    return ",".join(name for bit, name in FLAG_NAMES.items() if flags & bit)


def _as_padded(rows: Sequence[np.ndarray] | np.ndarray, fill: float) -> np.ndarray:
    """Ragged list of 1-D arrays (or a 2-D array) -> float64 [N, M] padded with `fill`.

    A numeric 1-D array is one wavelength grid shared by every row: returned as [1, M].
    """
    if isinstance(rows, np.ndarray) and rows.dtype != object and rows.ndim in (1, 2):
        return np.atleast_2d(rows.astype(np.float64, copy=False))
    arrays = [np.asarray(r, dtype=np.float64).ravel() for r in rows]
    width = max((a.size for a in arrays), default=0)
    out = np.full((len(arrays), max(width, 1)), fill, dtype=np.float64)
    for i, a in enumerate(arrays):
        out[i, : a.size] = a
    return out


def resample_to_rest(
    wave_um: Sequence[np.ndarray] | np.ndarray,
    flux: Sequence[np.ndarray] | np.ndarray,
    err: Sequence[np.ndarray] | np.ndarray | None,
    z: np.ndarray,
    grid_a: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear resampling of observed spectra onto `grid_a` (rest Angstrom), all rows at once.

    Returns (flux [N, D] float64, valid [N, D] bool, bad_wave [N] bool). A grid point is valid
    when it lies inside the observed range and both bracketing pixels have finite flux and a
    finite, positive error (when `err` is given). Rows whose wavelengths do not increase
    (trailing NaN padding is fine) are marked in `bad_wave` and get no valid points.
    """
    flx = _as_padded(flux, np.nan)
    wave = _as_padded(wave_um, np.nan)
    if wave.shape[0] == 1 and flx.shape[0] != 1 and wave.shape[1] == flx.shape[1]:
        wave = np.broadcast_to(wave, flx.shape)  # one shared observed grid
    if wave.shape != flx.shape:
        raise ValueError(f"wave and flux shapes differ: {wave.shape} vs {flx.shape}")
    good = np.isfinite(wave) & np.isfinite(flx)
    if err is not None:
        e = _as_padded(err, np.nan)
        if e.shape != wave.shape:
            raise ValueError(f"wave and err shapes differ: {wave.shape} vs {e.shape}")
        good &= np.isfinite(e) & (e > 0)
    n, m = wave.shape
    zz = np.asarray(z, dtype=np.float64).reshape(n)
    with np.errstate(invalid="ignore"):
        rest = wave * 1e4 / (1.0 + zz[:, None])  # um -> A, de-redshift
    # Padding / non-finite wavelengths go to +inf so each row stays sorted for searchsorted.
    rest = np.where(np.isfinite(rest), rest, np.inf)
    with np.errstate(invalid="ignore"):
        bad_wave = np.any(~(np.diff(rest, axis=1) > 0) & np.isfinite(rest[:, 1:]), axis=1)
    rest[bad_wave] = np.inf
    # One global searchsorted: shift row i by i * span so rows never interleave.
    finite_max = np.nanmax(np.where(np.isfinite(rest), rest, np.nan)) if np.isfinite(rest).any() else 0.0
    span = 2.0 * max(float(finite_max), float(grid_a[-1])) + 1.0
    offsets = span * np.arange(n, dtype=np.float64)[:, None]
    flat = (np.minimum(rest, span * 0.75) + offsets).ravel()
    targets = (grid_a[None, :] + offsets).ravel()
    idx = np.searchsorted(flat, targets, side="right").reshape(n, grid_a.size)
    idx -= m * np.arange(n)[:, None]  # index within the row of the first pixel > target
    hi = np.clip(idx, 1, m - 1)
    lo = hi - 1
    flat_lo = lo + m * np.arange(n)[:, None]  # flat gathers are faster than 2-D fancy indexing
    flat_hi = flat_lo + 1
    rest_f, flx_f, good_f = rest.ravel(), np.ascontiguousarray(flx).ravel(), good.ravel()
    w_lo, w_hi = rest_f[flat_lo], rest_f[flat_hi]
    inside = (idx >= 1) & (idx <= m - 1) & np.isfinite(w_hi) & np.isfinite(w_lo)
    inside |= (idx == m) & (rest[:, -1:] == grid_a[None, :])  # exactly on the last pixel
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (grid_a[None, :] - w_lo) / (w_hi - w_lo)
        out = flx_f[flat_lo] * (1.0 - t) + flx_f[flat_hi] * t
    valid = inside & good_f[flat_lo] & good_f[flat_hi] & np.isfinite(out)
    return np.where(valid, out, 0.0), valid, bad_wave


def preprocess_spectra(
    wave_um: Sequence[np.ndarray] | np.ndarray,
    flux: Sequence[np.ndarray] | np.ndarray,
    err: Sequence[np.ndarray] | np.ndarray | None,
    z: Sequence[float] | np.ndarray,
    config: PreprocessConfig | None = None,
) -> PreprocessedSpectra:
    """De-redshift, resample, mask, normalise at rest 1500 A and arcsinh-transform a batch.

    `wave_um` in micron (observed), `flux`/`err` in any common flux-density unit (uJy for DJA):
    the normalisation removes the unit. Rows that cannot be normalised are flagged, not dropped.
    """
    cfg = config or PreprocessConfig()
    grid = cfg.grid()
    zz = np.asarray(z, dtype=np.float64).ravel()
    n = zz.size
    flags = np.zeros(n, dtype=np.int32)
    bad_z = ~np.isfinite(zz) | (zz < 0) | (zz > MAX_REDSHIFT)
    flags[bad_z] |= FLAG_BAD_REDSHIFT
    if n == 0:
        d = grid.size
        return PreprocessedSpectra(
            np.zeros((0, d), np.float32), np.zeros((0, d), bool), np.zeros(0), flags, grid
        )
    flx_pad = _as_padded(flux, np.nan)
    if flx_pad.shape[0] != n:
        raise ValueError(f"{flx_pad.shape[0]} spectra but {n} redshifts")
    flags[~np.isfinite(flx_pad).any(axis=1)] |= FLAG_NONFINITE
    resampled, valid, bad_wave = resample_to_rest(
        wave_um, flx_pad, err, np.where(bad_z, 0.0, zz), grid
    )
    flags[bad_wave] |= FLAG_BAD_WAVELENGTH
    valid[bad_z] = False
    flags[~valid.any(axis=1) & (flags == 0)] |= FLAG_ALL_MASKED

    window = np.abs(grid - cfg.norm_wavelength_a) <= cfg.norm_half_width_a
    win_valid = valid[:, window]
    enough = win_valid.sum(axis=1) >= cfg.min_norm_points
    win_flux = np.where(win_valid, resampled[:, window], np.nan)
    norm = np.full(n, np.nan)
    if enough.any():
        norm[enough] = np.nanmedian(win_flux[enough], axis=1)
    if cfg.norm_fallback:
        fallback = ~enough & (flags == 0)
        if fallback.any():
            first = grid[np.argmax(valid[fallback], axis=1)]
            in_win = (grid[None, :] >= first[:, None]) & (
                grid[None, :] <= first[:, None] + 2 * cfg.norm_half_width_a
            )
            fb_valid = valid[fallback] & in_win
            fb_flux = np.where(fb_valid, resampled[fallback], np.nan)
            fb_enough = fb_valid.sum(axis=1) >= cfg.min_norm_points
            rows = np.flatnonzero(fallback)[fb_enough]
            norm[rows] = np.nanmedian(fb_flux[fb_enough], axis=1)
            enough[rows] = True
            flags[rows] |= FLAG_NORM_FALLBACK
    flags[~enough & (flags == 0)] |= FLAG_NO_FLUX_AT_NORM
    nonpos = enough & ~(norm > 0)
    flags[nonpos & ((flags & HARD_FLAGS) == 0)] |= FLAG_NONPOSITIVE_NORM

    ok = (flags & HARD_FLAGS) == 0
    mask = valid & ok[:, None]
    safe_norm = np.where(ok, norm, 1.0)
    x = np.where(mask, np.arcsinh(resampled / safe_norm[:, None]), 0.0).astype(np.float32)
    norm = np.where(ok, norm, np.nan)
    return PreprocessedSpectra(x=x, mask=mask, norm=norm, flags=flags, grid=grid)


__all__ = [
    "DEFAULT_GRID_START_A", "DEFAULT_GRID_STEP_A", "DEFAULT_GRID_SIZE", "FLAG_BAD_REDSHIFT",
    "FLAG_NONFINITE", "FLAG_ALL_MASKED", "FLAG_BAD_WAVELENGTH", "FLAG_NORM_FALLBACK", "FLAG_HIGH_RECON_ERROR", "HARD_FLAGS", "FLAG_NO_FLUX_AT_NORM", "FLAG_NONPOSITIVE_NORM",
    "FLAG_NAMES", "MAX_REDSHIFT", "rest_grid", "PreprocessConfig", "PreprocessedSpectra",
    "flag_reason", "resample_to_rest", "preprocess_spectra",
]
