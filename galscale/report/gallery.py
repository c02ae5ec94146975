"""The report's galaxy gallery: raw and denoised cutouts with P(disk) for a few chosen sources.

Cutouts are not stored in a run; the few gallery sources (at most `3 * per_group`) are cut again
from the survey exactly as the survey job cut them (`galscale.survey.cutouts.make_cutouts` on a
block read around each source, the same morphology stretch) and denoised with the run's
denoiser (`denoise_batch`). Choosing them reads only the source_id, x, y, p_disk, flags and
morph_resolved columns, so the gallery costs the same for 100 or 10^7 catalog rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from galscale.config import CutoutConfig
from galscale.report.figures import pyplot, save

GROUPS: dict[str, str] = {
    "random": "random scored sources",
    "disk": "most confident disk galaxies (highest P(disk))",
    "non_disk": "most confident non-disk galaxies (lowest P(disk))",
}


@dataclass
class GallerySelection:
    """Row indices chosen per gallery group (into the columns given to `choose_sources`)."""

    rows: dict[str, np.ndarray] = field(default_factory=dict)
    pool: str = ""  # which rows they were drawn from ("unflagged" or "all scored")

    def all_rows(self) -> np.ndarray:
        return np.unique(np.concatenate([r for r in self.rows.values()] or [np.zeros(0, int)]))


# Flags that make a row a poor gallery example: likely not a real galaxy, or no pixels.
_DUBIOUS = ("LOW_SNR", "NO_DATA", "OFF_SURVEY", "MISSING_DATA", "NO_MORPHOLOGY")


def choose_sources(p_disk: np.ndarray, flags: np.ndarray, per_group: int = 6,
                   seed: int = 0, resolved: np.ndarray | None = None) -> GallerySelection:
    """Most confident disk / non-disk and random sources, preferring resolved, unflagged rows.

    Only rows with a finite P(disk) are eligible. The pool is the first with at least
    `3 * per_group` rows of: resolved and unflagged (when the catalog has `morph_resolved`:
    P(disk) of unresolved sources is near chance, so showing them as "confident" misleads),
    unflagged, without a dubious flag (low S/N, no data, off the survey: edge or blended rows
    are real galaxies); else every scored row. Gallery titles mark flagged rows. Deterministic
    for a seed.
    """
    from galscale.survey.flags import Flag

    p = np.asarray(p_disk, dtype=float)
    f = np.asarray(flags, dtype=np.int64)
    scored = np.flatnonzero(np.isfinite(p))
    dubious = int(sum(int(Flag[name]) for name in _DUBIOUS))
    unflagged = scored[f[scored] == 0]
    pools = [("unflagged", unflagged),
             ("real detections (no low-S/N, no-data or off-survey flag)",
              scored[(f[scored] & dubious) == 0]),
             ("all scored", scored)]
    if resolved is not None:
        pools.insert(0, ("resolved (morph_resolved), unflagged",
                         unflagged[np.asarray(resolved, dtype=bool)[unflagged]]))
    name, pool = next(((n, q) for n, q in pools if len(q) >= 3 * per_group), pools[-1])
    real = pools[-2]
    if len(pool) < 3 * per_group and len(real[1]) >= 2:
        name, pool = real  # few sources: show fewer, but real ones
    order = pool[np.argsort(p[pool], kind="stable")]
    k = min(per_group, len(order) // 2)
    disk = order[::-1][:k]
    non_disk = order[:k]
    rest = np.setdiff1d(pool, np.concatenate([disk, non_disk]))
    rng = np.random.default_rng(seed)
    random = np.sort(rng.choice(rest, size=min(per_group, len(rest)), replace=False)) \
        if len(rest) else np.zeros(0, dtype=np.int64)
    return GallerySelection(rows={"random": random, "disk": disk, "non_disk": non_disk},
                            pool=name)


def morphology_cutouts(survey: Any, x: np.ndarray, y: np.ndarray,
                       config: CutoutConfig | None = None) -> np.ndarray:
    """float32 [N, 3, 256, 256] morphology cutouts at survey positions, as the job made them
    (with the run's `config`).

    Reads one block of the morphology bands around each source (so only those pixels are
    fetched, also from S3) and cuts it with `make_cutouts`.
    """
    from galscale.survey.cutouts import make_cutouts

    cfg = config or CutoutConfig()
    bands = [b for b in cfg.morph_bands if b in survey.bands]
    ny, nx = survey.shape
    half = cfg.morph_size // 2
    out = np.zeros((len(x), len(cfg.morph_bands), cfg.morph_size, cfg.morph_size), np.float32)
    for i, (xi, yi) in enumerate(zip(np.asarray(x, float), np.asarray(y, float), strict=True)):
        px, py = int(np.floor(xi + 0.5)), int(np.floor(yi + 0.5))
        y0, y1 = max(0, py - half), min(ny, py + half)
        x0, x1 = max(0, px - half), min(nx, px + half)
        if y0 >= y1 or x0 >= x1:
            continue  # off the survey: stays blank (such rows are flagged off_survey)
        block = survey.read_block(bands, y0, y1, x0, x1)
        out[i] = make_cutouts(block, np.array([xi]), np.array([yi]), survey.shape, cfg).morph[0]
    return out


def cutout_config_of_run(job_config: Mapping[str, Any]) -> CutoutConfig:
    """The `CutoutConfig` a run recorded in its provenance; runs from before framing was
    configurable cut 256 native pixels."""
    recorded = job_config.get("cutouts") or {"morph_side_per_radius": None}
    return CutoutConfig(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in recorded.items()})


def load_denoiser(source: str, expected_sha256: str | None = None) -> tuple[Any, str]:
    """(model, note): the run's denoiser artefact (folder or shipped name); the note says
    whether its SHA-256 matches the hash recorded in the run's provenance."""
    from galscale.registry import load_artifact, load_model

    sha = load_artifact(source).sha256
    if expected_sha256 and sha != expected_sha256:
        note = (f"denoiser {source!r} has SHA-256 {sha[:12]}..., the run used "
                f"{expected_sha256[:12]}...: denoised cutouts may differ from the run's")
    else:
        note = f"denoiser {source!r} (SHA-256 {sha[:12]}..., the run's)"
    return load_model(source), note


def _rgb(image: np.ndarray, crop: int) -> np.ndarray:
    c = image.shape[-1] // 2
    h = crop // 2
    return np.clip(image[:, c - h:c + h, c - h:c + h].transpose(1, 2, 0), 0, 1)


def draw_gallery(raw: np.ndarray, denoised: np.ndarray | None, titles: list[str],
                 path: str | os.PathLike[str], title: str, crop: int = 128) -> Path:
    """One column per source: raw cutout on top, denoised below (central `crop` pixels)."""
    plt = pyplot()
    n = len(raw)
    rows = 1 if denoised is None else 2
    fig, axes = plt.subplots(rows, max(n, 1), figsize=(1.45 * max(n, 1) + 0.5, 1.6 * rows + 0.5),
                             squeeze=False)
    for j in range(max(n, 1)):
        for r in range(rows):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= n:
                continue
            image = raw[j] if r == 0 else denoised[j]
            ax.imshow(_rgb(image, crop), origin="lower", interpolation="nearest")
            if r == 0:
                ax.set_title(titles[j], fontsize=7)
            if j == 0:
                ax.set_ylabel("raw" if r == 0 else "denoised", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def build_gallery(columns: Mapping[str, np.ndarray], survey: Any, denoiser: Any | None,
                  out_dir: str | os.PathLike[str], per_group: int = 6, seed: int = 0,
                  cutouts: CutoutConfig | None = None) -> dict[str, Any]:
    """Choose, cut, denoise and draw the three gallery groups; returns per-group PNG paths and
    the sources shown (`columns`: source_id, x, y, p_disk, flags, flag_reason, and
    morph_resolved when the catalog has it)."""
    from galscale.models.denoiser import denoise_batch

    selection = choose_sources(columns["p_disk"], columns["flags"], per_group, seed,
                               columns.get("morph_resolved"))
    chosen = selection.all_rows()
    raw = morphology_cutouts(survey, columns["x"][chosen], columns["y"][chosen], cutouts)
    clean = denoise_batch(denoiser, raw, batch_size=8) if denoiser is not None and len(raw) \
        else None
    where = {int(r): i for i, r in enumerate(chosen)}
    resolved = columns.get("morph_resolved")
    result: dict[str, Any] = {"pool": selection.pool, "groups": {},
                              "morph_resolved_rows": None if resolved is None
                              else int(np.count_nonzero(resolved))}
    for group, rows in selection.rows.items():
        idx = [where[int(r)] for r in rows]
        titles = []
        for r in rows:
            flag = " (flagged)" if int(columns["flags"][r]) else ""
            titles.append(f"{int(columns['source_id'][r])}\nP(disk)={columns['p_disk'][r]:.3f}"
                          f"{flag}")
        png = Path(out_dir) / f"gallery_{group}.png"
        if len(idx):
            draw_gallery(raw[idx], None if clean is None else clean[idx], titles, png,
                         GROUPS[group])
        result["groups"][group] = {
            "png": str(png) if len(idx) else None,
            "sources": [{"source_id": int(columns["source_id"][r]),
                         "p_disk": float(columns["p_disk"][r]),
                         "flag_reason": str(columns["flag_reason"][r] or "")} for r in rows],
        }
    return result


__all__ = ["GROUPS", "GallerySelection", "choose_sources", "morphology_cutouts",
           "cutout_config_of_run", "load_denoiser",
           "draw_gallery", "build_gallery"]
