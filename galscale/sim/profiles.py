"""Galaxy morphologies: random parameters and the GalSim light profiles they describe.

Every profile has unit flux; colours are applied later as per-band flux factors.

* `disk`: inclined exponential disk (GalSim `InclinedExponential`, scale height 0.1 scale
  radius) at random inclination and position angle; optionally a de Vaucouleurs-like Sersic
  bulge, a bar (elongated n = 0.5 Sersic) and 2-4 logarithmic spiral arms traced by Gaussian
  knots. Bars and arms are built face-on and projected with the disk's inclination.
* `non_disk` has three sub-types (`morph_type`): `spheroid` (Sersic n in 3-5, rounder),
  `irregular` (clumpy: 30 diffuse Gaussian knots like GalSim's `RandomKnots` plus 3-10 bright
  star-forming clumps on an offset exponential base) and `merger` (two Sersic components 1-3 half-light radii apart with an
  elongated tidal feature).

The parameter columns are those of the truth catalog (see docs/simulation.md).
"""

from __future__ import annotations

from typing import Any

import galsim
import numpy as np

from galscale.sim.render import KnotSet

DISK_SCALE_HEIGHT = 0.1  # h / r_s of the inclined exponential
SERSIC_N_STEP = 0.5  # Sersic indices are drawn on this grid so GalSim can reuse its tables
MORPH_TYPES: tuple[str, ...] = ("disk", "spheroid", "irregular", "merger")


def sample_morphology(kinds: np.ndarray, r_half: np.ndarray, rng: np.random.Generator,
                      non_disk_mix: tuple[float, float, float] = (0.6, 0.25, 0.15),
                      ) -> dict[str, np.ndarray]:
    """Random morphology parameters for galaxies of kind 'disk' or 'non_disk'.

    Returns equal-length column arrays: morph_type, sersic_n, axis_ratio, position_angle_deg,
    inclination_deg, bulge_fraction, bulge_sersic_n, has_bar, bar_fraction, has_spiral,
    n_arms, spiral_pitch_deg, spiral_fraction, n_clumps, merger_separation_arcsec,
    merger_flux_ratio, and a per-source integer `profile_seed` for GalSim's own random knots.
    All draws happen for every row, in a fixed order, so the result depends only on the seed.
    """
    n = len(kinds)
    is_disk = np.asarray(kinds) == "disk"
    u = rng.random((n, 16))
    nd_type = np.where(u[:, 0] < non_disk_mix[0], "spheroid",
                       np.where(u[:, 0] < non_disk_mix[0] + non_disk_mix[1], "irregular",
                                "merger"))
    morph_type = np.where(is_disk, "disk", nd_type)
    cos_i = 0.08 + 0.92 * u[:, 1]  # isotropic orientations, not perfectly edge-on
    incl = np.degrees(np.arccos(cos_i))
    q_disk = np.sqrt(cos_i**2 + DISK_SCALE_HEIGHT**2 * (1 - cos_i**2))  # thick-disk projection
    q_sph = 0.55 + 0.45 * u[:, 2]
    q_irr = 0.35 + 0.6 * u[:, 2]
    axis_ratio = np.select([is_disk, morph_type == "spheroid"], [q_disk, q_sph], q_irr)
    pa = 180.0 * u[:, 3]
    sph_n = np.round((3.0 + 2.0 * u[:, 4]) / SERSIC_N_STEP) * SERSIC_N_STEP
    mrg_n = np.round((1.0 + 3.0 * u[:, 4]) / SERSIC_N_STEP) * SERSIC_N_STEP
    sersic_n = np.select([is_disk, morph_type == "spheroid", morph_type == "merger"],
                         [1.0, sph_n, mrg_n], 1.0)
    has_bulge = is_disk & (u[:, 5] < 0.6)
    bulge_fraction = np.where(has_bulge, 0.05 + 0.35 * u[:, 6], 0.0)
    bulge_n = np.where(has_bulge, np.round((2.0 + 2.0 * u[:, 7]) / SERSIC_N_STEP) * SERSIC_N_STEP,
                       0.0)
    has_bar = is_disk & (u[:, 8] < 0.3)
    bar_fraction = np.where(has_bar, 0.08 + 0.12 * u[:, 9], 0.0)
    has_spiral = is_disk & (u[:, 10] < 0.55)
    n_arms = np.where(has_spiral, np.where(u[:, 11] < 0.6, 2, np.where(u[:, 11] < 0.85, 3, 4)), 0)
    pitch = np.where(has_spiral, 10.0 + 20.0 * u[:, 12], 0.0)
    spiral_fraction = np.where(has_spiral, 0.2 + 0.25 * u[:, 13], 0.0)
    n_clumps = np.where(morph_type == "irregular", 3 + (u[:, 14] * 8).astype(int), 0)
    sep = np.where(morph_type == "merger", (1.0 + 2.0 * u[:, 14]) * r_half, 0.0)
    ratio = np.where(morph_type == "merger", 1.0 + 3.0 * u[:, 15], 0.0)
    profile_seed = rng.integers(1, 2**31 - 1, size=n)
    return {
        "morph_type": morph_type.astype(object), "sersic_n": sersic_n, "axis_ratio": axis_ratio,
        "position_angle_deg": pa, "inclination_deg": np.where(is_disk, incl, np.nan),
        "bulge_fraction": bulge_fraction, "bulge_sersic_n": bulge_n, "has_bar": has_bar,
        "bar_fraction": bar_fraction, "has_spiral": has_spiral, "n_arms": n_arms.astype(np.int16),
        "spiral_pitch_deg": pitch, "spiral_fraction": spiral_fraction,
        "n_clumps": n_clumps.astype(np.int16), "merger_separation_arcsec": sep,
        "merger_flux_ratio": ratio, "profile_seed": profile_seed.astype(np.int64),
    }


def _rotation(pa_rad: float) -> np.ndarray:
    c, s = np.cos(pa_rad), np.sin(pa_rad)
    return np.array([[c, -s], [s, c]])


def _spiral_arms(r_s: float, n_arms: int, pitch_deg: float, rng: np.random.Generator,
                 flux: float, projection: np.ndarray) -> KnotSet:
    """Logarithmic spiral arms traced by Gaussian knots, weighted like the disk light.

    Knots are laid out face-on, then mapped by `projection` (inclination, rotation).
    """
    knots_per_arm = 24
    tan_p = np.tan(np.radians(pitch_deg))
    phase0 = rng.uniform(0, 2 * np.pi)
    r0 = 0.5 * r_s
    theta = np.linspace(0.0, np.log(4.5 * r_s / r0) / tan_p, knots_per_arm)
    r = r0 * np.exp(theta * tan_p)
    xs, ys, ws = [], [], []
    for a in range(n_arms):
        phi = theta + phase0 + 2 * np.pi * a / n_arms
        jitter = rng.normal(0.0, 0.08 * r_s, size=(2, knots_per_arm))
        xs.append(r * np.cos(phi) + jitter[0])
        ys.append(r * np.sin(phi) + jitter[1])
        ws.append(r * np.exp(-r / r_s) * rng.uniform(0.5, 1.5, knots_per_arm))
    pos = projection @ np.vstack([np.concatenate(xs), np.concatenate(ys)])
    w = np.concatenate(ws)
    return KnotSet(pos[0], pos[1], w / w.sum() * flux, 0.2 * r_s, projection)


def _clumps(n: int, spread: float, sigma: float, flux: float,
            rng: np.random.Generator) -> KnotSet:
    """`n` round Gaussian clumps scattered with a Gaussian of width `spread` (arcsec)."""
    pos = rng.normal(0.0, spread, size=(2, n))
    return KnotSet(pos[0], pos[1], rng.dirichlet(np.ones(n)) * flux, sigma)


def galaxy_profile(row: dict[str, Any], r_half: float) -> tuple[galsim.GSObject, tuple[KnotSet, ...]]:
    """Unit-flux model of one galaxy: (smooth GalSim profile, knot sets); fluxes sum to 1.

    `row` holds one entry of each morphology column. Sersic components are truncated (6
    half-light radii) so that each stays inside its stamp.
    """
    kind = row["morph_type"]
    pa_deg = float(row["position_angle_deg"])
    pa = pa_deg * galsim.degrees
    rng = np.random.default_rng(int(row["profile_seed"]))
    if kind == "disk":
        r_s = r_half / 1.678
        incl = np.radians(float(row["inclination_deg"]))
        cos_i = float(np.cos(incl))
        f_b, f_bar, f_sp = (float(row["bulge_fraction"]), float(row["bar_fraction"]),
                            float(row["spiral_fraction"]))
        f_disk = 1.0 - f_b - f_bar
        disk = galsim.InclinedExponential(incl * galsim.radians, scale_radius=r_s,
                                          scale_h_over_r=DISK_SCALE_HEIGHT)
        knots: tuple[KnotSet, ...] = ()
        projection = _rotation(np.radians(pa_deg)) @ np.diag([1.0, cos_i])
        if row["has_spiral"]:
            comps = [disk.withFlux(f_disk * (1 - f_sp))]
            knots = (_spiral_arms(r_s, int(row["n_arms"]), float(row["spiral_pitch_deg"]), rng,
                                  f_disk * f_sp, projection),)
        else:
            comps = [disk.withFlux(f_disk)]
        if row["has_bar"]:  # face-on bar, projected like the disk (compressed along y by cos i)
            bar = galsim.Sersic(n=0.5, half_light_radius=0.45 * r_half)
            bar = bar.shear(q=0.3, beta=rng.uniform(0, 180) * galsim.degrees)
            comps.append(bar.transform(1.0, 0.0, 0.0, cos_i).withFlux(f_bar))
        if f_b > 0:
            q_b = max(float(row["axis_ratio"]), 0.75)
            comps.append(galsim.Sersic(n=float(row["bulge_sersic_n"]),
                                       half_light_radius=0.25 * r_half, trunc=1.5 * r_half,
                                       flux=f_b).shear(q=q_b, beta=0 * galsim.degrees))
        return galsim.Add(comps).rotate(pa), knots
    if kind == "spheroid":
        return galsim.Sersic(n=float(row["sersic_n"]), half_light_radius=r_half,
                             trunc=6 * r_half).shear(q=float(row["axis_ratio"]), beta=pa), ()
    if kind == "irregular":
        base = galsim.Exponential(half_light_radius=r_half, flux=0.45)
        base = base.shear(q=float(row["axis_ratio"]), beta=pa).shift(
            *(rng.normal(0, 0.2 * r_half, 2)))
        diffuse = _clumps(30, 0.85 * r_half, 0.12 * r_half + 0.005, 0.3, rng)
        bright = _clumps(int(row["n_clumps"]), 0.8 * r_half, 0.06 * r_half + 0.01, 0.25, rng)
        return base, (diffuse, bright)
    if kind == "merger":
        ratio = float(row["merger_flux_ratio"])
        f1 = ratio / (1 + ratio)
        sep = float(row["merger_separation_arcsec"])
        theta = rng.uniform(0, 2 * np.pi)
        dx, dy = 0.5 * sep * np.cos(theta), 0.5 * sep * np.sin(theta)
        g1 = galsim.Sersic(n=float(row["sersic_n"]), half_light_radius=r_half, trunc=6 * r_half,
                           flux=0.9 * f1).shear(q=float(row["axis_ratio"]), beta=pa)
        g2 = galsim.Sersic(n=1.0, half_light_radius=r_half * rng.uniform(0.4, 0.9),
                           flux=0.9 * (1 - f1)).shear(q=rng.uniform(0.4, 1.0),
                                                      beta=rng.uniform(0, 180) * galsim.degrees)
        tail = galsim.Gaussian(sigma=0.8 * r_half, flux=0.1).shear(q=0.2,
                                                                   beta=theta * galsim.radians)
        return galsim.Add([g1.shift(dx, dy), g2.shift(-dx, -dy),
                           tail.shift(-1.2 * dx, -1.2 * dy)]), ()
    raise ValueError(f"unknown morph_type {kind!r}; expected one of {MORPH_TYPES}")


def profile_extent_arcsec(row: dict[str, Any], r_half: float) -> float:
    """Radius (arcsec) that contains essentially all of the profile's light."""
    if row["morph_type"] == "merger":
        return 6 * r_half + 0.6 * float(row["merger_separation_arcsec"])
    if row["morph_type"] == "irregular":
        return 4.5 * r_half
    return 6 * r_half if row["morph_type"] == "spheroid" else 5.0 * r_half
