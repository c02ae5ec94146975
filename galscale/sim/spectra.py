"""Simulated NIRSpec prism spectra of z > 4 galaxies, with truth labels.

Five populations named by seed 003, plus noisy / artifact-dominated spectra:

| label | population | continuum | lines |
| --- | --- | --- | --- |
| 0 quenched | quenched / post-starburst | red UV, Balmer break x2-4 | weak (EW < 30 A) |
| 1 lae | Lyman-alpha emitters | blue UV | Ly-alpha EW 80-300 A, moderate optical |
| 2 eelg | extreme emission-line galaxies | blue UV, weak break | [OIII]+Hbeta, H-alpha EW 800-3000 A |
| 3 highz_metal_poor | metal-poor high-z | very blue UV (beta < -2.5) | weak; drawn from the high-z tail |
| 4 lrd | Little Red Dots | V shape: blue UV, red optical turning at the Balmer limit | broad H-alpha, H-beta |
| 5 noisy | noisy / artifacts | any of the above | S/N 0.3-1, spikes, steps, bumps, dead chunks |

Spectra are f_nu in uJy on a prism-like observed pixel grid from 0.6 to 5.3 micron with two
pixels per resolution element and R varying from ~30 (1.1 um) to ~330 (5.3 um). Lines are
Gaussians whose width is the instrumental width at their observed wavelength (plus the
intrinsic width of broad lines); breaks are smoothed by the same resolution.

Redshifts follow the real DJA z > 4 prism distribution through a committed 101-point quantile
table (`sim/data/dja_z4_redshift_quantiles.npy`, the 0..100th percentiles of the 668 redshifts
in learnspec's `redshift_z4_16.npy`); each population samples its own quantile range so that,
as in the paper, redshift correlates with population. Everything is drawn from one
`numpy.random.Generator` seeded by the caller: a seed gives identical spectra.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

POPULATIONS: tuple[str, ...] = (
    "quenched", "lae", "eelg", "highz_metal_poor", "lrd", "noisy",
)
REDSHIFT_QUANTILES_FILE = Path(__file__).parent / "data" / "dja_z4_redshift_quantiles.npy"

# Rest-frame vacuum wavelengths (Angstrom) of the lines the simulator draws.
LINES_A: dict[str, float] = {
    "lya": 1215.67, "civ": 1549.0, "ciii": 1908.7, "oii": 3728.5, "neiii": 3869.9,
    "hdelta": 4102.9, "hgamma": 4341.7, "hbeta": 4862.7, "oiii4960": 4960.3,
    "oiii5008": 5008.2, "hei": 5877.3, "halpha": 6564.6, "sii": 6725.0,
}
LYMAN_ALPHA_A = LINES_A["lya"]
BALMER_LIMIT_A = 3646.0
_C_KMS = 299_792.458

# Quantile range of the real redshift distribution each population samples from.
_Z_QUANTILE_RANGE: dict[str, tuple[float, float]] = {
    "quenched": (0.0, 0.55), "lae": (0.1, 1.0), "eelg": (0.0, 0.9),
    "highz_metal_poor": (0.6, 1.0), "lrd": (0.1, 0.85), "noisy": (0.0, 1.0),
}


def prism_resolution(wave_um: np.ndarray) -> np.ndarray:
    """Approximate NIRSpec PRISM/CLEAR resolving power R(lambda): ~30 near 1.1 um, ~330 at 5.3."""
    knots_um = np.array([0.6, 0.8, 1.1, 1.5, 2.0, 3.0, 4.0, 5.3])
    knots_r = np.array([70.0, 45.0, 30.0, 40.0, 80.0, 150.0, 230.0, 330.0])
    return np.interp(wave_um, knots_um, knots_r)


def prism_wavelength_grid(start_um: float = 0.6, stop_um: float = 5.3) -> np.ndarray:
    """Observed pixel centres (micron), two pixels per resolution element (~400 pixels)."""
    waves = [start_um]
    while waves[-1] < stop_um:
        lam = waves[-1]
        waves.append(lam + lam / (2.0 * float(prism_resolution(np.array([lam]))[0])))
    return np.array(waves[:-1], dtype=np.float64)


def redshift_quantiles() -> np.ndarray:
    """The committed 0..100th percentiles of the real DJA z > 4 prism redshifts."""
    return np.load(REDSHIFT_QUANTILES_FILE, allow_pickle=False)


def sample_redshifts(
    rng: np.random.Generator, n: int, quantile_range: tuple[float, float] = (0.0, 1.0)
) -> np.ndarray:
    """Inverse-CDF draws from the real redshift distribution, restricted to a quantile range."""
    q = redshift_quantiles()
    u = rng.uniform(quantile_range[0], quantile_range[1], size=n)
    return np.interp(u, np.linspace(0.0, 1.0, q.size), q)


@dataclass
class SimulatedSpectra:
    """A batch of simulated spectra on one shared observed grid, with truth."""

    ids: np.ndarray  # int64 [N]
    z: np.ndarray  # float64 [N]
    wave_um: np.ndarray  # float64 [M], shared by every spectrum
    flux: np.ndarray  # float32 [N, M], uJy
    err: np.ndarray  # float32 [N, M], uJy
    label: np.ndarray  # int16 [N], index into POPULATIONS

    @property
    def population(self) -> np.ndarray:
        return np.asarray(POPULATIONS, dtype=object)[self.label]

    def __len__(self) -> int:
        return int(self.ids.size)


def _smooth_step(x: np.ndarray, edge: np.ndarray | float, width: np.ndarray) -> np.ndarray:
    """0 -> 1 logistic step at `edge` with a resolution-like `width` (same units as x)."""
    return 0.5 * (1.0 + np.tanh((x - edge) / (1.2 * np.maximum(width, 1e-3))))


def _draw_population_params(rng: np.random.Generator, pop: str, n: int) -> dict[str, np.ndarray]:
    u = rng.uniform
    zeros = np.zeros(n)
    if pop == "quenched":
        return dict(
            beta_uv=u(-1.2, 0.0, n), beta_opt=u(-2.3, -1.6, n), break_amp=u(2.0, 4.0, n),
            lya=zeros, civ=zeros, ciii=zeros, oii=u(0, 15, n), oiii=u(0, 15, n),
            halpha=u(5, 30, n), broad_fwhm=zeros,
        )
    if pop == "lae":
        return dict(
            beta_uv=u(-2.5, -1.9, n), beta_opt=u(-2.3, -1.8, n), break_amp=u(0.9, 1.2, n),
            lya=u(80, 300, n), civ=u(5, 20, n), ciii=u(5, 20, n), oii=u(20, 60, n),
            oiii=u(100, 400, n), halpha=u(150, 450, n), broad_fwhm=zeros,
        )
    if pop == "eelg":
        return dict(
            beta_uv=u(-2.5, -2.0, n), beta_opt=u(-2.4, -1.9, n), break_amp=u(0.7, 1.0, n),
            lya=u(0, 10, n), civ=u(0, 10, n), ciii=u(10, 40, n), oii=u(30, 100, n),
            oiii=u(1000, 3000, n), halpha=u(800, 2000, n), broad_fwhm=zeros,
        )
    if pop == "highz_metal_poor":
        return dict(
            beta_uv=u(-3.0, -2.5, n), beta_opt=u(-2.6, -2.2, n), break_amp=u(0.6, 0.9, n),
            lya=zeros, civ=u(0, 5, n), ciii=u(0, 10, n), oii=u(0, 10, n),
            oiii=u(20, 100, n), halpha=u(50, 200, n), broad_fwhm=zeros,
        )
    if pop == "lrd":
        return dict(
            beta_uv=u(-2.4, -1.6, n), beta_opt=u(0.3, 1.8, n), break_amp=u(0.9, 1.1, n),
            lya=zeros, civ=zeros, ciii=zeros, oii=zeros, oiii=u(10, 60, n),
            halpha=u(300, 1000, n), broad_fwhm=u(2000, 4000, n),
        )
    raise ValueError(f"unknown population {pop!r}; choose from {POPULATIONS[:-1]}")


def _rest_model(
    lam_rest: np.ndarray, sigma_res: np.ndarray, p: dict[str, np.ndarray], pop: str
) -> np.ndarray:
    """f_nu model (1 at rest 1500 A) for a block of one population; arrays [n, M]."""
    col = {k: v[:, None] for k, v in p.items()}
    x = lam_rest
    uv = (x / 1500.0) ** (col["beta_uv"] + 2.0)
    at_limit = (BALMER_LIMIT_A / 1500.0) ** (col["beta_uv"] + 2.0)
    opt = at_limit * col["break_amp"] * (x / BALMER_LIMIT_A) ** (col["beta_opt"] + 2.0)
    # Balmer break spread over 3646-4000 A (the blend of high-order Balmer lines) + resolution.
    step = _smooth_step(x, 3800.0, np.hypot(80.0, sigma_res))
    cont = uv * (1.0 - step) + opt * step
    cont *= _smooth_step(x, LYMAN_ALPHA_A, np.hypot(5.0, sigma_res))  # IGM absorption
    if pop == "highz_metal_poor":  # damping wing: a softer Lyman-alpha break
        cont *= _smooth_step(x, LYMAN_ALPHA_A + 30.0, np.hypot(30.0, sigma_res))
    ew = {
        "lya": col["lya"], "civ": col["civ"], "ciii": col["ciii"], "oii": col["oii"],
        "neiii": 0.3 * col["oii"], "hdelta": 0.05 * col["halpha"],
        "hgamma": 0.1 * col["halpha"], "hbeta": col["halpha"] / 2.86 + 0.1 * col["oiii"],
        "oiii4960": col["oiii"] / 2.98, "oiii5008": col["oiii"], "hei": 0.03 * col["halpha"],
        "halpha": col["halpha"], "sii": 0.05 * col["halpha"] * (pop == "quenched"),
    }
    flux = cont.copy()
    for name, ew_line in ew.items():
        lam0 = LINES_A[name]
        broad = name in ("halpha", "hbeta") and pop == "lrd"
        sig_int = lam0 * (col["broad_fwhm"] if broad else 100.0) / _C_KMS / 2.355
        sigma = np.sqrt(sigma_res**2 + sig_int**2)
        near = np.argmin(np.abs(x - lam0), axis=1)
        cont_at = np.take_along_axis(cont, near[:, None], axis=1)
        if name == "lya":  # the line sits on the break: use the red-side continuum level
            cont_at = (LYMAN_ALPHA_A / 1500.0) ** (col["beta_uv"] + 2.0)
        flux += cont_at * ew_line * np.exp(-0.5 * ((x - lam0) / sigma) ** 2) / (
            np.sqrt(2 * np.pi) * sigma
        )
    return flux


def _add_artifacts(rng: np.random.Generator, flux: np.ndarray, level: np.ndarray) -> None:
    """In place: artifacts in units of each spectrum's continuum `level` at rest 1500 A:
    cosmic-ray-like spikes, a background step, broad residual bumps and a dead (zero) chunk."""
    n, m = flux.shape
    pix = np.arange(m)
    for i in range(n):
        spikes = rng.integers(0, m, size=rng.integers(5, 15))
        flux[i, spikes] += rng.choice([-1.0, 1.0], spikes.size) * rng.uniform(5, 30) * level[i]
        start = rng.integers(0, m - 40)
        flux[i, start:] += rng.normal(0.0, 2.0) * level[i]
        for _ in range(rng.integers(1, 4)):
            centre, width = rng.uniform(0, m), rng.uniform(10, 60)
            flux[i] += rng.normal(0.0, 3.0) * level[i] * np.exp(-0.5 * ((pix - centre) / width) ** 2)
        dead = rng.integers(0, m - 30)
        flux[i, dead : dead + rng.integers(10, 30)] = 0.0


def simulate_spectra(
    n: int,
    seed: int = 0,
    fractions: dict[str, float] | None = None,
    snr_range: tuple[float, float] = (3.0, 20.0),
    first_id: int = 0,
) -> SimulatedSpectra:
    """Simulate `n` prism spectra; `fractions` maps population -> share (default equal).

    `snr_range` bounds the log-uniform per-pixel S/N of the continuum at rest 1500 A for the
    five galaxy populations; the "noisy" population has S/N 0.3-1.0 and artifacts.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    fr = fractions or {p: 1.0 for p in POPULATIONS}
    unknown = set(fr) - set(POPULATIONS)
    if unknown:
        raise ValueError(f"unknown populations {sorted(unknown)}; choose from {POPULATIONS}")
    share = np.array([max(fr.get(p, 0.0), 0.0) for p in POPULATIONS])
    if share.sum() <= 0:
        raise ValueError("population fractions must not all be zero")
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.choice(len(POPULATIONS), size=n, p=share / share.sum()))
    wave = prism_wavelength_grid()
    m = wave.size
    z = np.empty(n)
    flux = np.empty((n, m), dtype=np.float64)
    err = np.empty((n, m), dtype=np.float64)
    sensitivity = 1.0 + 0.6 * ((wave - 2.2) / 2.0) ** 2 + 2.0 * np.exp(-(wave - 0.6) / 0.15)
    for k, pop in enumerate(POPULATIONS):
        rows = np.flatnonzero(labels == k)
        if rows.size == 0:
            continue
        nk = rows.size
        z_k = sample_redshifts(rng, nk, _Z_QUANTILE_RANGE[pop])
        base = pop
        if pop == "noisy":  # an artifact-dominated version of a random galaxy population
            base_idx = rng.integers(0, len(POPULATIONS) - 1, size=nk)
            model = np.empty((nk, m))
            for b in range(len(POPULATIONS) - 1):
                sel = base_idx == b
                if sel.any():
                    model[sel] = _model_block(rng, POPULATIONS[b], wave, z_k[sel])
        else:
            model = _model_block(rng, base, wave, z_k)
        f1500 = 10 ** rng.uniform(-1.7, -0.7, nk)  # uJy at rest 1500 A
        lo, hi = (0.3, 1.0) if pop == "noisy" else snr_range
        snr = np.exp(rng.uniform(np.log(lo), np.log(hi), nk))
        e = (f1500 / snr)[:, None] * sensitivity[None, :]
        f = model * f1500[:, None] + rng.normal(size=(nk, m)) * e
        if pop == "noisy":
            _add_artifacts(rng, f, f1500)
        z[rows], flux[rows], err[rows] = z_k, f, e
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    return SimulatedSpectra(
        ids=ids, z=z, wave_um=wave, flux=flux.astype(np.float32), err=err.astype(np.float32),
        label=labels.astype(np.int16),
    )


def _model_block(
    rng: np.random.Generator, pop: str, wave_um: np.ndarray, z: np.ndarray
) -> np.ndarray:
    params = _draw_population_params(rng, pop, z.size)
    lam_rest = wave_um[None, :] * 1e4 / (1.0 + z[:, None])
    sigma_res = lam_rest / (2.355 * prism_resolution(wave_um)[None, :])
    return _rest_model(lam_rest, sigma_res, params, pop)


__all__ = [
    "POPULATIONS", "LINES_A", "REDSHIFT_QUANTILES_FILE", "SimulatedSpectra", "prism_resolution",
    "prism_wavelength_grid", "redshift_quantiles", "sample_redshifts", "simulate_spectra",
]
