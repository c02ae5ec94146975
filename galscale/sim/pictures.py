"""Pictures of the simulator: a colour composite of a field and a gallery of stamps per class.

The field is written with Pillow, the gallery with matplotlib (Agg backend). Colours: R = F444W + F356W, G = F277W + F200W,
B = F150W + F115W (+ F090W), each scaled by its background noise and shown with a shared
asinh (Lupton-style) stretch, so faint sources are visible and bright cores do not saturate.
"""

from __future__ import annotations

import os

import numpy as np

RGB_GROUPS: tuple[tuple[str, ...], ...] = (("F444W", "F356W"), ("F277W", "F200W"),
                                           ("F150W", "F115W", "F090W"))


def asinh_rgb(channels: np.ndarray, soft: float, vmax: float) -> np.ndarray:
    """[3, H, W] linear intensities -> [H, W, 3] in [0, 1] with a colour-preserving asinh stretch."""
    total = np.maximum(channels.sum(axis=0), 1e-12)
    stretched = np.arcsinh(total / soft) / np.arcsinh(vmax / soft)
    rgb = channels * (stretched / total)[None]
    rgb = np.clip(rgb, 0.0, None)
    peak = np.maximum(rgb.max(axis=0), 1.0)  # keep hue where a channel exceeds 1
    return np.moveaxis(rgb / peak[None], 0, -1)


def composite(science: dict[str, np.ndarray], error: dict[str, np.ndarray] | None = None,
              soft_sigma: float = 2.0, max_sigma: float | None = 600.0,
              black_sigma: float = 0.0) -> np.ndarray:
    """[H, W, 3] float RGB image of a field from its band mosaics (missing bands skipped).

    Channels are in units of the background sigma; `black_sigma` is subtracted first (a black
    point that hides most noise); `max_sigma` None scales to the brightest pixel.
    """
    chans = []
    for group in RGB_GROUPS:
        present = [b for b in group if b in science]
        if not present:
            raise ValueError(f"no band of {group} in the survey; cannot make a composite")
        acc = np.zeros_like(next(iter(science.values())), dtype=np.float32)
        for b in present:
            sig = float(np.nanmedian(error[b])) if error is not None else float(
                1.4826 * np.nanmedian(np.abs(science[b] - np.nanmedian(science[b]))))
            acc += np.nan_to_num(science[b]) / max(sig, 1e-12)
        chans.append(np.clip(acc / len(present) - black_sigma, 0.0, None))
    stack = np.stack(chans)
    vmax = max_sigma if max_sigma is not None else max(float(stack.sum(axis=0).max()), 20.0)
    return asinh_rgb(stack, soft_sigma, vmax)


def save_field_png(science: dict[str, np.ndarray], error: dict[str, np.ndarray], path: str,
                   crop: int | None = 1024) -> str:
    """Save a colour composite (central `crop` x `crop` pixels) as PNG; returns the path."""
    ny, nx = next(iter(science.values())).shape
    if crop and crop < min(ny, nx):
        y0, x0 = (ny - crop) // 2, (nx - crop) // 2
        science = {b: a[y0:y0 + crop, x0:x0 + crop] for b, a in science.items()}
        error = {b: a[y0:y0 + crop, x0:x0 + crop] for b, a in error.items()}
    return _save_rgb_png(composite(science, error, black_sigma=1.0), path)


def save_gallery_png(rows: dict[str, np.ndarray], path: str, titles: dict[str, list[str]] | None = None,
                     cell: float = 1.3) -> str:
    """Save a gallery: one row per class, each entry an [H, W, 3] RGB image in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), ncol, figsize=(cell * ncol + 1.2, cell * len(rows)),
                             squeeze=False)
    for r, (name, imgs) in enumerate(rows.items()):
        for c in range(ncol):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(imgs):
                ax.imshow(imgs[c], origin="lower", interpolation="nearest")
                if titles and name in titles and c < len(titles[name]):
                    ax.set_title(titles[name][c], fontsize=6, pad=2)
            else:
                ax.set_axis_off()
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.tight_layout(pad=0.3)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _save_rgb_png(rgb: np.ndarray, path: str, max_bytes: int = 500_000) -> str:
    """Save [H, W, 3] in [0, 1] as a palette PNG (small files for the README)."""
    from PIL import Image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img = Image.fromarray((np.clip(rgb[::-1], 0, 1) * 255).astype(np.uint8), "RGB")
    img.save(path, optimize=True)
    for colours in (256, 128, 64):  # too large: fall back to a palette image
        if os.path.getsize(path) <= max_bytes:
            break
        img.quantize(colours, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    return path


def make_pictures(out_dir: str, seed: int = 0, field_size: int = 1024,
                  n_sources: int = 260, per_class: int = 8) -> dict[str, str]:
    """Simulate a small field and stamps; write sim_field.png and sim_gallery.png to out_dir."""
    from galscale.config import NIRCAM_BANDS, SimConfig
    from galscale.sim.stamps import morphology_stamps, redshift_stamps
    from galscale.sim.survey import simulate_survey

    sim = simulate_survey(SimConfig(size=field_size, n_sources=n_sources, seed=seed))
    field = save_field_png(sim.science, sim.error, os.path.join(out_dir, "sim_field.png"),
                           crop=None)
    rows: dict[str, list[np.ndarray]] = {}
    titles: dict[str, list[str]] = {}
    imgs, labels, meta = morphology_stamps(4 * per_class, seed, size=256)
    mt = meta.column("morph_type").to_pylist()
    for name, want in (("disk", 1), ("non-disk", 0)):
        idx = [i for i in range(len(labels)) if labels[i] == want][:per_class]
        rows[f"morphology:\n{name}"] = [np.moveaxis(imgs[i], 0, -1) for i in idx]
        titles[f"morphology:\n{name}"] = [mt[i] for i in idx]
    flux, err, lab, zmeta = redshift_stamps(8 * per_class, seed, class_fractions=(1, 1, 1))
    z = zmeta.column("redshift").to_numpy()
    m444 = zmeta.column("mag_F444W").to_numpy()
    for k, cname in enumerate(("low_z", "high_z", "brown_dwarf")):
        idx = np.flatnonzero(lab == k)[:per_class]
        sci = [{b: flux[i, j] for j, b in enumerate(NIRCAM_BANDS)} for i in idx]
        er = [{b: err[i, j] for j, b in enumerate(NIRCAM_BANDS)} for i in idx]
        rows[f"7-band:\n{cname}"] = [composite(s, e, max_sigma=None) for s, e in zip(sci, er, strict=True)]
        titles[f"7-band:\n{cname}"] = [
            (f"z={z[i]:.1f} " if cname != "brown_dwarf" else "") + f"F444W={m444[i]:.1f}"
            for i in idx]
    gallery = save_gallery_png(rows, os.path.join(out_dir, "sim_gallery.png"), titles)
    return {"field": field, "gallery": gallery}
